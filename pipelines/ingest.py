"""Ingest stage: scan the catalogue and bring the ``tracks`` table in line with it.

Incremental and idempotent:

- only files that are new, or whose size / modification time / sidecar metadata changed, are
  hashed and probed (on the workers);
- files gone from the catalogue are deleted from ``tracks``, and clips and embeddings of
  track ids no path refers to any more are pruned; a file that became unreadable keeps its rows
  (and is reported as quarantined) until it is readable again or gone;
- a run that finds nothing to change writes nothing (no new Delta version);
- unreadable files land in ``ingest_errors`` with a reason, and the run goes on.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from soundalike.catalogue import describe_track, read_sidecar, scan_catalogue, sidecar_tags
from soundalike.config import Config
from soundalike.errors import ConfigError, SoundalikeError
from soundalike_pipelines.schemas import TRACKS
from soundalike_pipelines.session import ensure_tables, get_spark
from soundalike_pipelines.writes import delete_where_key_in, upsert
from soundalike_pipelines.summary import StageSummary

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

_TRACK_ROWS = T.StructType(
    [TRACKS[name] for name in ("track_id", "path", "bytes", "modified", "duration_s", "sample_rate", "channels",
                               "format", "title", "tags", "metadata")]
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
class IngestSummary(StageSummary):
    """What one ingest run did."""

    files_seen: int
    probed: int
    upserted: int
    removed: int
    errors: int
    pruned_track_ids: int
    seconds: float



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


def scanned_rows(cfg: Config) -> list[tuple]:
    """The catalogue as it is on disk now (stat + sidecar, no reads of audio), as _SCANNED rows."""
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
    return rows


def run_ingest(cfg: Config, spark: SparkSession | None = None) -> IngestSummary:
    """Run the ingest stage; see the module docstring.

    The comparison of disk and table happens on the driver (one row per file on each side):
    it costs one table scan instead of a chain of Spark joins, and what is to do is fixed
    before anything is written.
    """
    started = time.perf_counter()
    spark = spark or get_spark(cfg)
    ensure_tables(spark, cfg)
    tracks_name = cfg.tables.name("tracks")
    errors_name = cfg.tables.name("ingest_errors")
    scanned = {row[0]: row for row in scanned_rows(cfg)}
    # A name that is not UTF-8 cannot travel through Spark (strings are UTF-8): Spark would hand
    # back another name, so the file is recorded under a printable form of its bytes instead.
    unnamed = {_printable(p): p for p in scanned if not _is_utf8(p)}
    for path in unnamed.values():
        del scanned[path]
    same = ("path", "bytes", "modified", "title", "metadata")
    existing = {r["path"]: r for r in spark.table(tracks_name).select(*same, "track_id").collect()}
    errors_now = {(r["path"], r["stage"]): r for r in spark.table(errors_name).collect()}
    if existing and not scanned and not unnamed:
        # An unmounted volume or a wrong path looks like an emptied catalogue; never drop it all.
        raise ConfigError(
            f"no audio files ({', '.join(cfg.catalogue.extensions)}) under catalogue.path={cfg.catalogue.path}, "
            f"but {tracks_name} holds {len(existing)} file(s): refusing to remove them all. Check the path "
            f"(is the volume mounted?); to really start over, delete the tables."
        )

    todo = [row for path, row in scanned.items()
            if path not in existing or tuple(existing[path][c] for c in same) != (row[0], row[1], row[2], row[3], row[5])]
    probed = []
    if todo:
        frame = spark.createDataFrame(todo, _SCANNED)
        partitions = max(1, min(len(todo), spark.sparkContext.defaultParallelism * 4))
        probed = (
            frame.select("path").repartition(partitions)
            .mapInPandas(_probe_batches(cfg.catalogue.max_file_bytes), _PROBED)
            .collect()
        )
    good = [p for p in probed if p["error_class"] is None]
    bad = [p for p in probed if p["error_class"] is not None] + [
        {"path": shown, "error_class": "InvalidFileName",
         "message": f"{shown}: the file name is not valid UTF-8; rename the file to ingest it"}
        for shown in unnamed
    ]

    if good:
        by_path = {row[0]: row for row in todo}
        rows = [(p["track_id"], p["path"], by_path[p["path"]][1], by_path[p["path"]][2], p["duration_s"],
                 p["sample_rate"], p["channels"], p["format"], by_path[p["path"]][3], by_path[p["path"]][4],
                 by_path[p["path"]][5]) for p in good]
        frame = spark.createDataFrame(rows, _TRACK_ROWS).withColumn("ingested_at", F.current_timestamp())
        upsert(spark, tracks_name, frame.select(*[f.name for f in TRACKS.fields]), keys=("path",), count=len(rows))

    # Gone from disk: their rows go (with errors of files that are gone). A file that was ingested
    # and is now unreadable (emptied, truncated, replaced by junk) keeps its row, and so its clips,
    # vectors and place in the index: bad input never loses what is stored. Its error is
    # recorded, so it shows as quarantined until it is readable again or removed.
    drop = sorted(p for p in existing if p not in scanned)
    if drop:
        delete_where_key_in(spark, tracks_name, spark.createDataFrame([(p,) for p in drop], "path string"), key="path")
    new_errors = [(p["path"], "ingest", p["error_class"], p["message"]) for p in bad
                  if (old := errors_now.get((p["path"], "ingest"))) is None
                  or (old["error_class"], old["message"]) != (p["error_class"], p["message"])]
    if new_errors:
        frame = spark.createDataFrame(new_errors, "path string, stage string, error_class string, message string")
        upsert(spark, errors_name, frame.withColumn("seen_at", F.current_timestamp()), keys=("path", "stage"),
               count=len(new_errors))
    # Stale: errors of files that are gone, and ingest errors of files that are readable again
    # (probed good now, or back to the very bytes, size and time of their stored row).
    readable = {g["path"] for g in good} | (set(scanned) & set(existing) - {row[0] for row in todo})
    stale = sorted({path for (path, stage) in errors_now
                    if (path not in scanned and path not in unnamed) or (stage == "ingest" and path in readable)})
    if stale:
        delete_where_key_in(spark, errors_name, spark.createDataFrame([(p,) for p in stale], "path string"), key="path")

    changed_ids = any(p["path"] in existing and existing[p["path"]]["track_id"] != p["track_id"] for p in good)
    pruned = prune_orphans(spark, cfg) if (drop or changed_ids) else 0
    return IngestSummary(
        files_seen=len(scanned) + len(unnamed),
        probed=len(todo),
        upserted=len(good),
        removed=len(drop),
        errors=len(bad),
        pruned_track_ids=pruned,
        seconds=round(time.perf_counter() - started, 2),
    )


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:  # os.walk gave undecodable bytes as lone surrogates
        return False


def _printable(path: str) -> str:
    """The path with its non-UTF-8 bytes written as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def prune_orphans(spark: SparkSession, cfg: Config) -> int:
    """Delete clips and embeddings of track ids that no row of ``tracks`` refers to."""
    live = spark.table(cfg.tables.name("tracks")).select("track_id").distinct()
    pruned = 0
    for table in ("clips", "embeddings"):
        name = cfg.tables.name(table)
        orphans = spark.table(name).select("track_id").distinct().join(live, "track_id", "left_anti")
        pruned = max(pruned, delete_where_key_in(spark, name, orphans, key="track_id"))
    return pruned
