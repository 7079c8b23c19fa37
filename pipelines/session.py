"""Getting a Spark session and making sure the Delta tables exist."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from soundalike.config import Config
from soundalike.errors import ConfigError
from soundalike_pipelines.schemas import TABLES, ddl


def get_spark(cfg: Config) -> SparkSession:
    """The active session (Databricks, or a caller's), else a local one built from ``cfg.spark``."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Workers must run this interpreter (it has soundalike and its dependencies), and a local
    # driver binds to loopback.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse = Path(cfg.workdir, "warehouse").resolve()
    builder = (
        SparkSession.builder.master(cfg.spark.master)
        .appName(cfg.spark.app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.pyspark.python", sys.executable)
    )
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, str(value))
    if cfg.spark.with_delta_pip:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if cfg.spark.with_delta_pip:
        _require_delta(spark)
    return spark


def delta_packages() -> str:
    """Maven coordinates of the Delta jars matching the installed delta-spark and pyspark.

    What ``configure_spark_with_delta_pip`` adds, for ``spark-submit --packages``.

    Examples
    --------
    >>> delta_packages()  # doctest: +SKIP
    'io.delta:delta-spark_4.1_2.13:4.1.0'
    """
    from importlib.metadata import version

    import pyspark

    spark_major_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_major_minor}_2.13:{version('delta-spark')}"


def _require_delta(spark: SparkSession) -> None:
    """Fail with the fix when the driver has no Delta classes.

    ``spark.jars.packages`` (what ``configure_spark_with_delta_pip`` sets) is resolved only when
    the JVM starts; under ``spark-submit`` it has started before this code runs, so the jars
    must come from the command line.
    """
    if not spark.sparkContext._jvm.org.apache.spark.util.Utils.classIsLoadable(
        "io.delta.sql.DeltaSparkSessionExtension"
    ):
        raise ConfigError(
            "the Spark driver has no Delta Lake classes: its JVM was started before this config "
            "could add them (as under spark-submit). Pass them on the command line: spark-submit "
            f"--packages {delta_packages()} {' '.join(sys.argv)}"
        )


def table_location(cfg: Config, table: str) -> str | None:
    """Where an external table's files live, or None for catalog-managed tables."""
    if not cfg.tables.external:
        return None
    short = cfg.tables.name(table).split(".")[-1]
    return str(Path(cfg.workdir, "warehouse", cfg.tables.schema, short).resolve())


def ensure_tables(spark: SparkSession, cfg: Config) -> None:
    """Create the schema and every table if missing (for external tables: register them)."""
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {cfg.tables.catalog}.{cfg.tables.schema}")
    for table, (schema, _keys, comment) in TABLES.items():
        location = table_location(cfg, table)
        where = f" LOCATION '{location}'" if location else ""
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {cfg.tables.name(table)} ({ddl(schema)}) "
            f"USING delta COMMENT '{comment}'{where}"
        )
