"""Duplicates stage: which catalogue files are the same recording, an edit of one, or a version.

Incremental: :func:`~soundalike_pipelines.fingerprints.update_fingerprints` fingerprints only new
tracks; only pairs that involve a track not yet compared are computed (each such track against
the whole catalogue, :func:`soundalike.duplicates.find_pairs`), and MERGEd into ``duplicates`` on
``(track_a, track_b)``; pairs of removed tracks are deleted. Which tracks were compared, under
which settings, is kept in ``duplicates_checked``: the index stage fingerprints new tracks too
(it runs first in ``pipeline``), so "fingerprinted just now" cannot be what makes a track new.
``exact`` pairs (files sharing a ``track_id``) are re-derived from ``tracks`` on every run (no
audio involved), and a pair whose file was renamed gets its new path. A run with nothing new writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from soundalike.config import Config, config_to_dict
from soundalike.duplicates import KINDS, exact_pairs, find_pairs
from soundalike_pipelines.fingerprints import fingerprint_settings, load_fingerprints, update_fingerprints
from soundalike_pipelines.schemas import DUPLICATES
from soundalike_pipelines.session import ensure_tables, get_spark
from soundalike_pipelines.summary import StageSummary
from soundalike_pipelines.writes import delete_where_key_in, unreadable_paths, upsert

_ROW = "track_a string, track_b string, path_a string, path_b string, kind string, score double, " \
       "coverage double, offset_s double, evidence string"


@dataclass
class DuplicatesSummary(StageSummary):
    new_tracks: int
    removed_tracks: int
    pairs_written: int
    pairs_deleted: int
    counts: dict
    seconds: float


def run_duplicates(cfg: Config, spark: SparkSession | None = None, *, progress: bool = False) -> DuplicatesSummary:
    """Run the duplicates stage; see the module docstring."""
    from delta.tables import DeltaTable

    started = time.perf_counter()
    spark = spark or get_spark(cfg)
    ensure_tables(spark, cfg)
    name = cfg.tables.name("duplicates")
    fingerprinted, removed = update_fingerprints(spark, cfg)
    fingerprinted = set(fingerprinted)
    checked_name = cfg.tables.name("duplicates_checked")
    shaped = [config_to_dict(cfg.duplicates), fingerprint_settings(cfg.fingerprint)]
    settings = hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:16]
    checked = {r["track_id"]: r["settings"] for r in spark.table(checked_name).collect()}
    new_ids = sorted(t for t in fingerprinted if checked.get(t) != settings)
    gone = sorted(t for t in checked if t not in fingerprinted)
    removed = sorted(set(removed) | set(gone))  # the index stage may have dropped their landmarks first
    paths: dict[str, list[str]] = {}
    for r in spark.table(cfg.tables.name("tracks")).select("track_id", "path").collect():
        paths.setdefault(r["track_id"], []).append(r["path"])
    unreadable = {r["path"] for r in unreadable_paths(spark, cfg).collect()}
    # A readable copy first, where a track has one.
    first = {t: min(p, key=lambda path: (path in unreadable, path)) for t, p in paths.items()}

    rows = []
    if new_ids:
        from soundalike.audio import load_audio
        from soundalike.errors import AudioDecodeError

        index, pitch = load_fingerprints(spark, cfg)

        @lru_cache(maxsize=16)
        def wave(track_id: str):
            # A stored track whose file became unreadable keeps its landmarks, but its pairs cannot
            # be checked by ear: find_pairs drops them, and the run goes on.
            try:
                return load_audio(first[track_id], cfg.fingerprint.sample_rate_hz)
            except AudioDecodeError:
                return None

        for p in find_pairs(index, pitch, new_ids=new_ids, cfg=cfg.duplicates, load_wave=wave, progress=progress):
            j = p.to_json()
            rows.append((p.track_a, p.track_b, first.get(p.track_a), first.get(p.track_b), p.kind, j["score"],
                         j["coverage"], j["offset_s"], json.dumps(j["evidence"])))
    existing = {(r["track_a"], r["track_b"]): r for r in spark.table(name).collect()}
    for p in exact_pairs(paths):
        files = [e["path"] for e in p.evidence]
        row = (p.track_a, p.track_b, files[0], files[1], "exact", 1.0, 1.0, 0.0, json.dumps(files))
        old = existing.get((p.track_a, p.track_b))
        if old is None or old["evidence"] != row[-1]:
            rows.append(row)
    # Renamed or moved files: the pair stands, its paths follow.
    written = {(r[0], r[1]) for r in rows}
    for key, r in existing.items():
        if r["kind"] != "exact" and key not in written and key[0] in first and key[1] in first and (
                (r["path_a"], r["path_b"]) != (first[key[0]], first[key[1]])):
            rows.append((key[0], key[1], first[key[0]], first[key[1]], r["kind"], r["score"], r["coverage"],
                         r["offset_s"], r["evidence"]))
    # Gone: pairs of removed or re-fingerprinted tracks, and exact groups down to one file.
    paired = {t for k in existing for t in k}
    stale = set(removed) | (set(new_ids) & paired) | (paired - set(first))
    exact_now = {(p.track_a, p.track_b) for p in exact_pairs(paths)}
    new_keys = {(r[0], r[1]) for r in rows}
    drop = [k for k, r in existing.items() if k not in new_keys and (
        k[0] in stale or k[1] in stale or (r["kind"] == "exact" and k not in exact_now))]
    if drop:
        keys = spark.createDataFrame(drop, "track_a string, track_b string")
        (DeltaTable.forName(spark, name).alias("t")
         .merge(keys.alias("s"), "t.track_a = s.track_a AND t.track_b = s.track_b")
         .whenMatchedDelete().execute())
    if rows:
        frame = spark.createDataFrame(rows, _ROW).withColumn("run_at", F.current_timestamp())
        upsert(spark, name, frame.select(*[f.name for f in DUPLICATES.fields]), keys=("track_a", "track_b"),
               count=len(rows))
    if new_ids:  # after the pairs: a crash before this compares them again
        frame = spark.createDataFrame([(t, settings) for t in new_ids], "track_id string, settings string")
        upsert(spark, checked_name, frame.withColumn("checked_at", F.current_timestamp()), keys=("track_id",),
               count=len(new_ids))
    if gone:
        delete_where_key_in(spark, checked_name, spark.createDataFrame([(t,) for t in gone], "track_id string"),
                            key="track_id")
    counts = {k: 0 for k in KINDS}
    if rows or drop:
        for r in spark.table(name).groupBy("kind").count().collect():
            counts[r["kind"]] = int(r["count"])
    else:
        for r in existing.values():
            counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    return DuplicatesSummary(len(new_ids), len(removed), len(rows), len(drop), counts,
                             round(time.perf_counter() - started, 2))


def read_duplicates(spark: SparkSession, cfg: Config) -> list[dict]:
    """The ``duplicates`` table as JSON-ready dicts, duplicates first, strongest first."""
    out = []
    for r in spark.table(cfg.tables.name("duplicates")).collect():
        d = r.asDict()
        d["evidence"] = json.loads(d["evidence"]) if d["evidence"] else []
        d["run_at"] = d["run_at"].isoformat() if d["run_at"] else None
        out.append(d)
    return sorted(out, key=lambda d: (KINDS.index(d["kind"]) if d["kind"] in KINDS else 9, -d["score"],
                                      d["track_a"], d["track_b"]))
