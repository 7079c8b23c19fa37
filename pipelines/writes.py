"""Delta writes that are idempotent and skip empty work.

Every write is a MERGE or DELETE on natural keys, preceded by a count of what would change, so
a run with nothing to do leaves every table at its current version.
"""

from __future__ import annotations

from typing import Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from soundalike.config import Config


def _on(keys: Sequence[str]) -> str:
    return " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)


def upsert(spark: SparkSession, table: str, rows: DataFrame, *, keys: Sequence[str], count: int | None = None) -> int:
    """MERGE ``rows`` into ``table``: update matching keys, insert the rest. Returns rows merged.

    ``count``: the number of rows when the caller knows it (saves a Spark job); keys must then be unique.
    """
    if count is None:
        rows = rows.dropDuplicates(list(keys))
    n = rows.count() if count is None else count
    if n:
        (
            DeltaTable.forName(spark, table).alias("t")
            .merge(rows.alias("s"), _on(keys))
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
    return n


def insert_new(
    spark: SparkSession, table: str, rows: DataFrame, *, keys: Sequence[str], count_first: bool = True
) -> int:
    """Insert the rows of ``rows`` whose keys ``table`` lacks.

    Returns rows inserted, or -1 with ``count_first=False``: for callers that know ``rows`` is
    non-empty, the MERGE runs straight away (one Spark job instead of three).
    """
    if not count_first:
        (
            DeltaTable.forName(spark, table).alias("t")
            .merge(rows.alias("s"), _on(keys))
            .whenNotMatchedInsertAll()
            .execute()
        )
        return -1
    fresh = rows.dropDuplicates(list(keys)).join(spark.table(table).select(*keys), list(keys), "left_anti")
    fresh = fresh.cache()
    n = fresh.count()
    if n:
        (
            DeltaTable.forName(spark, table).alias("t")
            .merge(fresh.alias("s"), _on(keys))
            .whenNotMatchedInsertAll()
            .execute()
        )
    fresh.unpersist()
    return n


def delete_where_key_in(spark: SparkSession, table: str, keys_df: DataFrame, *, key: str) -> int:
    """Delete the rows of ``table`` whose ``key`` appears in ``keys_df``. Returns keys matched."""
    present = keys_df.select(key).distinct().join(spark.table(table).select(key).distinct(), key)
    present = present.cache()
    n = present.count()
    if n:
        (
            DeltaTable.forName(spark, table).alias("t")
            .merge(present.alias("s"), _on([key]))
            .whenMatchedDelete()
            .execute()
        )
    present.unpersist()
    return n


def record_errors(
    spark: SparkSession, cfg: Config, bad: DataFrame, *, clear_paths: DataFrame, stage: str
) -> int:
    """Record failures of ``stage`` in ``ingest_errors``; forget earlier ones of paths now fine.

    ``bad`` has columns path, stage, error_class, message: the files this run tried and failed.
    Every one gets ``seen_at`` now, also when it failed the same way before: the stage skips a
    file whose error is newer than its ``tracks`` row, so a file retried after it changed (or
    was touched) and failing again is not retried on every later run. Returns the number of
    bad rows.
    """
    name = cfg.tables.name("ingest_errors")
    bad = bad.dropDuplicates(["path", "stage"]).cache()
    n_bad = bad.count()
    upsert(spark, name, bad.withColumn("seen_at", F.current_timestamp()), keys=("path", "stage"), count=n_bad)
    forget_errors(spark, cfg, clear_paths, stage=stage)
    bad.unpersist()
    return n_bad


def unreadable_paths(spark: SparkSession, cfg: Config) -> DataFrame:
    """Paths (one column, ``path``) whose file the last ingest could not read: a stored track
    whose file became unreadable keeps its rows, and the later stages leave these paths out."""
    return spark.table(cfg.tables.name("ingest_errors")).where(F.col("stage") == "ingest").select("path")


def forget_errors(spark: SparkSession, cfg: Config, paths: DataFrame, *, stage: str) -> None:
    """Delete the ``stage`` errors of ``paths`` (a frame with a path column) from ``ingest_errors``."""
    name = cfg.tables.name("ingest_errors")
    fixed = spark.table(name).where(F.col("stage") == stage).select("path").join(paths.select("path").distinct(), "path")
    if fixed.limit(1).count():
        (
            DeltaTable.forName(spark, name).alias("t")
            .merge(fixed.distinct().alias("s"), f"t.path = s.path AND t.stage = '{stage}'")
            .whenMatchedDelete()
            .execute()
        )
