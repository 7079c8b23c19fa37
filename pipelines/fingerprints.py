"""Landmark fingerprints per track, kept in the ``fingerprints`` Delta table (incremental).

:func:`update_fingerprints` decodes only tracks that lack landmarks for the current
``fingerprint`` settings (once each, at 8 kHz, on the workers) and drops the rows of track ids no
path refers to any more. The index stage builds the query-time
:class:`~soundalike.fingerprint.FingerprintIndex` from this table and the duplicates stage
compares tracks with it, so no stage decodes a track twice for landmarks.

A file that cannot be decoded lands in ``ingest_errors`` (stage ``fingerprint``) and is skipped
until it changes (its error row is newer than its ``tracks`` row), as the embed stage does.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from soundalike.config import Config, FingerprintConfig, config_to_dict
from soundalike.errors import SoundalikeError
from soundalike_pipelines.schemas import FINGERPRINTS
from soundalike_pipelines.writes import delete_where_key_in, record_errors, upsert

STAGE = "fingerprint"  # ingest_errors.stage of files that could not be decoded for landmarks
_COLUMNS = [f.name for f in FINGERPRINTS.fields if f.name != "created_at"]
# A fingerprint row, or a failed file's row (error_class set, no landmarks).
_OUT = ("track_id string, path string, settings string, duration_s double, hashes array<int>, times array<int>, "
        "pitch binary, error_class string, message string")
_OUT_COLUMNS = ["track_id", "path", *_COLUMNS[1:], "error_class", "message"]


def fingerprint_settings(cfg: FingerprintConfig) -> str:
    """A short hash of the settings that shape landmarks and pitch sequences (and the pitch revision)."""
    from soundalike.duplicates import PITCH_REVISION

    shaped = dict(config_to_dict(cfg), pitch_revision=PITCH_REVISION)
    return hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:16]


def _fingerprint_batches(cfg_dict: dict, settings: str):
    def run(batches):
        from soundalike.audio import load_audio
        from soundalike.config import config_from_dict
        from soundalike.duplicates import PITCH_VIEWS, pitch_sequence
        from soundalike.fingerprint import fingerprint_wave

        fp_cfg = config_from_dict(cfg_dict).fingerprint
        for pdf in batches:
            rows = []
            for tid, path in zip(pdf["track_id"], pdf["path"]):
                try:
                    wave = load_audio(path, fp_cfg.sample_rate_hz)
                except SoundalikeError as exc:
                    rows.append((tid, path, None, None, None, None, None, type(exc).__name__, str(exc)))
                    continue
                fp = fingerprint_wave(wave, fp_cfg.sample_rate_hz, fp_cfg)
                pitch = pitch_sequence(wave, fp_cfg.sample_rate_hz) if fp_cfg.sample_rate_hz == 8000 else np.zeros((PITCH_VIEWS, 0), np.uint8)
                rows.append((tid, path, settings, fp.duration_s, fp.hashes.view(np.int32).tolist(), fp.times.tolist(),
                             pitch.tobytes(), None, None))
            yield pd.DataFrame(rows, columns=_OUT_COLUMNS)

    return run


def update_fingerprints(spark: SparkSession, cfg: Config) -> tuple[list[str], list[str]]:
    """Fingerprint new tracks, forget gone ones. Returns ``(fingerprinted, removed_track_ids)``.

    ``fingerprinted``: every live track whose row in the table is of the current settings once
    this call is done (made now or before). A track whose file failed to decode is recorded in
    ``ingest_errors`` instead, and is not tried again until its ``tracks`` row is newer than that
    error (the file changed).
    """
    name = cfg.tables.name("fingerprints")
    settings = fingerprint_settings(cfg.fingerprint)
    tracks = spark.table(cfg.tables.name("tracks")).select("track_id", "path", "ingested_at").collect()
    have = {r["track_id"]: r["settings"] for r in spark.table(name).select("track_id", "settings").collect()}
    live: dict[str, str] = {}
    for r in tracks:
        live[r["track_id"]] = min(r["path"], live.get(r["track_id"], r["path"]))
    ingested = {r["path"]: r["ingested_at"] for r in tracks}
    failed = {r["path"]: r["seen_at"] for r in spark.table(cfg.tables.name("ingest_errors"))
              .where(F.col("stage") == STAGE).select("path", "seen_at").collect()}
    quarantined = {p for p, seen in failed.items() if p in ingested and seen >= ingested[p]}
    removed = sorted(t for t in have if t not in live)
    todo = sorted(t for t in live if have.get(t) != settings and live[t] not in quarantined)
    if removed:
        delete_where_key_in(spark, name, spark.createDataFrame([(t,) for t in removed], "track_id string"), key="track_id")
    current = sorted(t for t in live if have.get(t) == settings)
    if not todo:
        return current, removed
    frame = spark.createDataFrame([(t, live[t]) for t in todo], "track_id string, path string")
    parts = max(1, min(len(todo), spark.sparkContext.defaultParallelism * 4))
    # Checkpointed: every track is decoded once, and the counts and writes below cannot re-trigger it.
    made = (frame.repartition(parts).mapInPandas(_fingerprint_batches(config_to_dict(cfg), settings), _OUT)
            .localCheckpoint(eager=True))
    outcome = made.select("track_id", "error_class").collect()
    done = sorted(r["track_id"] for r in outcome if r["error_class"] is None)
    good = made.where(F.col("error_class").isNull())
    if done:
        upsert(spark, name, good.select(*_COLUMNS).withColumn("created_at", F.current_timestamp()),
               keys=("track_id",), count=len(done))
    if len(done) < len(outcome) or any(live[t] in failed for t in done):
        record_errors(
            spark, cfg, made.where(F.col("error_class").isNotNull())
            .select("path", F.lit(STAGE).alias("stage"), "error_class", "message"),
            clear_paths=good.select("path"), stage=STAGE,
        )
    return sorted(set(current) | set(done)), removed


def load_fingerprints(spark: SparkSession, cfg: Config):
    """``(FingerprintIndex, {track_id: pitch uint8 [PITCH_VIEWS, frames]})`` of every live track, from the table
    (the ``pitch`` column holds the views row after row)."""
    from soundalike.duplicates import PITCH_VIEWS
    from soundalike.fingerprint import Fingerprint, FingerprintIndex, frame_seconds

    settings = fingerprint_settings(cfg.fingerprint)
    rows = (spark.table(cfg.tables.name("fingerprints")).where(F.col("settings") == settings)
            .orderBy("track_id").collect())
    frame_s = frame_seconds(cfg.fingerprint)
    fps = {r["track_id"]: Fingerprint(np.asarray(r["hashes"] or [], np.int32).view(np.uint32),
                                      np.asarray(r["times"] or [], np.int32), float(r["duration_s"] or 0.0), frame_s)
           for r in rows}
    pitch = {r["track_id"]: np.frombuffer(bytes(r["pitch"] or b""), np.uint8).reshape(PITCH_VIEWS, -1) for r in rows}
    return FingerprintIndex.from_fingerprints(fps, cfg.fingerprint), pitch
