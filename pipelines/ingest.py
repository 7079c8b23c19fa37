"""Ingest stage: scan the catalogue and bring the ``tracks`` table in line with it.

Incremental and idempotent:

- only files that are new, or whose size / modification time / sidecar metadata changed, are
  hashed and probed (on the workers);
- files gone from the catalogue are deleted from ``tracks``, and clips and embeddings of
  track ids no path refers to any more are pruned;
- a run that finds nothing to change writes nothing (no new Delta version);
- unreadable files land in ``ingest_errors`` with a reason, and the run goes on.
"""

from __future__ import annotations

import json
from datetime import datetime
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from soundalike.catalogue import describe_track, read_sidecar, scan_catalogue, sidecar_tags
from soundalike.config import Config
from soundalike.errors import SoundalikeError
from soundalike_pipelines.schemas import TRACKS
from soundalike_pipelines.session import ensure_tables, get_spark
from soundalike_pipelines.writes import delete_where_key_in, record_errors, upsert

_SCANNED = T.StructType(
    [
        T.StructField("path", T.StringType(), False),
        T.StructField("bytes", T.LongType()),
        T.StructField("modified", T.TimestampType()),
        T.StructField("title", T.StringType()),
        T.StructField("tags", T.ArrayType(T.StringType())),
        T.StructField("metadata", T.StringType()),
    ]
)

_PROBED = T.StructType(
    [
        T.StructField("path", T.StringType(), False),
        T.StructField("track_id", T.StringType()),
        T.StructField("duration_s", T.DoubleType()),
        T.StructField("sample_rate", T.IntegerType()),
        T.StructField("channels", T.IntegerType()),
        T.StructField("format", T.StringType()),
        T.StructField("error_class", T.StringType()),
        T.StructField("message", T.StringType()),
    ]
)


@dataclass
class IngestSummary:
    """What one ingest run did."""

    files_seen: int
    probed: int
    upserted: int
    removed: int
    errors: int
    pruned_track_ids: int
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


def _probe_batches(max_file_bytes: int):
    def probe(batches):
        for pdf in batches:
            rows = []
            for path in pdf["path"]:
                try:
                    info = describe_track(path, max_file_bytes=max_file_bytes)
                    rows.append((path, info.track_id, info.duration_s, info.sample_rate_hz,
                                 info.channels, info.format, None, None))
                except SoundalikeError as exc:
                    rows.append((path, None, None, None, None, None, type(exc).__name__, str(exc)))
                except Exception as exc:  # noqa: BLE001 - a bad file must never stop the job
                    rows.append((path, None, None, None, None, None, type(exc).__name__,
                                 f"unexpected error reading {path}: {exc}"))
            yield pd.DataFrame(rows, columns=[f.name for f in _PROBED.fields])

    return probe


def scanned_frame(spark: SparkSession, cfg: Config) -> DataFrame:
    """The catalogue as it is on disk now (stat + sidecar, no reads of audio)."""
    root = Path(cfg.catalogue.path)
    sidecar = read_sidecar(root, cfg.catalogue.metadata_file)
    rows = []
    for f in scan_catalogue(root, extensions=cfg.catalogue.extensions):
        entry = sidecar.get(f.path)
        title = str(entry.get("title")) if entry and entry.get("title") else Path(f.path).stem
        rows.append(
            (
                f.path,
                f.bytes,
                datetime.fromtimestamp(f.modified_s),
                title,
                sidecar_tags(entry) if entry else [],
                json.dumps(entry, sort_keys=True) if entry else None,
            )
        )
    return spark.createDataFrame(rows, _SCANNED)


def run_ingest(cfg: Config, spark: SparkSession | None = None) -> IngestSummary:
    """Run the ingest stage; see the module docstring."""
    started = time.perf_counter()
    spark = spark or get_spark(cfg)
    ensure_tables(spark, cfg)
    tracks_name = cfg.tables.name("tracks")
    scanned = scanned_frame(spark, cfg).cache()
    files_seen = scanned.count()
    existing = spark.table(tracks_name)

    # New or changed: no row with the same path, size, mtime and sidecar metadata.
    same = ["path", "bytes", "modified", "title", "metadata"]
    todo = scanned.join(existing.select(*same), on=scanned["path"].eqNullSafe(existing["path"])
                        & scanned["bytes"].eqNullSafe(existing["bytes"])
                        & scanned["modified"].eqNullSafe(existing["modified"])
                        & scanned["title"].eqNullSafe(existing["title"])
                        & scanned["metadata"].eqNullSafe(existing["metadata"]), how="left_anti")
    # Fixed now (collected): our own writes to tracks below must not change what is to do.
    todo = spark.createDataFrame(todo.collect(), _SCANNED)
    n_todo = todo.count()

    upserted = errors = 0
    if n_todo:
        partitions = max(1, min(n_todo, spark.sparkContext.defaultParallelism * 4))
        probed = (
            todo.select("path")
            .repartition(partitions)
            .mapInPandas(_probe_batches(cfg.catalogue.max_file_bytes), _PROBED)
            .localCheckpoint(eager=True)
        )
        good = (
            probed.where(F.col("error_class").isNull())
            .join(todo, "path")
            .withColumn("ingested_at", F.current_timestamp())
            .select(*[f.name for f in TRACKS.fields])
        )
        upserted = upsert(spark, tracks_name, good, keys=("path",))
        bad = probed.where(F.col("error_class").isNotNull()).select(
            "path", F.lit("ingest").alias("stage"), "error_class", "message"
        )
        errors = record_errors(spark, cfg, bad, clear_paths=good.select("path"), stage="ingest")
        # A bad file that used to be good must not keep its old row.
        delete_where_key_in(spark, tracks_name, bad.select("path"), key="path")

    # Gone from disk: delete, with their errors.
    gone = spark.table(tracks_name).select("path").join(scanned.select("path"), "path", "left_anti")
    removed = delete_where_key_in(spark, tracks_name, gone, key="path")
    errors_name = cfg.tables.name("ingest_errors")
    stale_errors = spark.table(errors_name).select("path").distinct().join(scanned.select("path"), "path", "left_anti")
    delete_where_key_in(spark, errors_name, stale_errors, key="path")

    pruned = prune_orphans(spark, cfg)
    scanned.unpersist()
    return IngestSummary(
        files_seen=files_seen,
        probed=n_todo,
        upserted=upserted,
        removed=removed,
        errors=errors,
        pruned_track_ids=pruned,
        seconds=round(time.perf_counter() - started, 2),
    )


def prune_orphans(spark: SparkSession, cfg: Config) -> int:
    """Delete clips and embeddings of track ids that no row of ``tracks`` refers to."""
    live = spark.table(cfg.tables.name("tracks")).select("track_id").distinct()
    pruned = 0
    for table in ("clips", "embeddings"):
        name = cfg.tables.name(table)
        orphans = spark.table(name).select("track_id").distinct().join(live, "track_id", "left_anti")
        pruned = max(pruned, delete_where_key_in(spark, name, orphans, key="track_id"))
    return pruned
