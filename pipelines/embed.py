"""Embed stage: cut every track that lacks them into clips, flag them, embed them.

Runs :func:`soundalike.extract.extract_tracks` — :func:`~soundalike.extract.extract_track`, the
function the query model uses, over a partition's files — inside ``mapInArrow``: the embedder
is built once per Python worker and reused across batches, each track is decoded once, and its
clips are embedded in batches of ``embedder.batch_size``. On CUDA, ``embedder.decode_workers``
threads decode the next files while the GPU embeds, and batches span files. Results go to
``clips`` and ``embeddings`` by MERGE on their natural keys.

A track is work when it lacks clips for the current clip policy or embeddings for the current
embedder ``name@version``, and every track of the policy is when the flag thresholds changed
(the clips' flags are redone, their vectors kept); a track whose file failed this stage is
skipped until the file changes (its error row is newer than its ``tracks`` row) or the embed
settings change (clip policy, embedder, flag thresholds, decode timeout).
"""

from __future__ import annotations

import heapq
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from soundalike.config import Config, config_from_dict, config_to_dict
from soundalike.embedders import Embedder, create_embedder
from soundalike.extract import clip_policy, extract_tracks, flags_policy
from soundalike.errors import SoundalikeError
from soundalike_pipelines.schemas import CLIPS, EMBEDDINGS
from soundalike_pipelines.session import ensure_tables, get_spark
from soundalike_pipelines.writes import forget_errors, insert_new, record_errors, upsert
from soundalike_pipelines.summary import StageSummary

_OUT = T.StructType(
    [
        T.StructField("track_id", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("clip_idx", T.IntegerType(), False),
        T.StructField("start_s", T.DoubleType()),
        T.StructField("end_s", T.DoubleType()),
        T.StructField("rms_db", T.FloatType()),
        T.StructField("is_silent", T.BooleanType()),
        T.StructField("is_noise", T.BooleanType()),
        T.StructField("vector", T.ArrayType(T.FloatType())),
        T.StructField("error_class", T.StringType()),
        T.StructField("message", T.StringType()),
    ]
)

_OUT_ARROW = to_arrow_schema(_OUT)

# One embedder per Python worker process, keyed by the config that built it.
_WORKER_EMBEDDERS: dict[str, Embedder] = {}


def worker_embedder(cfg: Config) -> Embedder:
    """The embedder for ``cfg``, built once per process."""
    key = json.dumps([config_to_dict(cfg.embedder), cfg.clips.clip_s], sort_keys=True)
    if key not in _WORKER_EMBEDDERS:
        import torch

        if not torch.cuda.is_available():
            # Spark already runs one task per core; torch's own threads would oversubscribe them.
            torch.set_num_threads(1)
        _WORKER_EMBEDDERS[key] = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    return _WORKER_EMBEDDERS[key]


#: Clip rows per Arrow batch handed back to Spark (a few hundred kB of vectors).
_ROWS_PER_BATCH = 1024


def _embed_batches(cfg_dict: dict):
    """The ``mapInArrow`` function: Arrow batches of (track_id, path) in, ``_OUT`` rows out."""

    def embed(batches):
        cfg = config_from_dict(cfg_dict)
        embedder = worker_embedder(cfg)
        # On a GPU, threads decode the next files while the model embeds; on CPUs Spark's
        # one-task-per-core is the parallelism and each task decodes in turn.
        workers = cfg.embedder.decode_workers if getattr(embedder, "device", None) is not None \
            and embedder.device.type == "cuda" else 0
        rows = _ClipRows()
        for batch in batches:
            ids, paths = batch.column("track_id").to_pylist(), batch.column("path").to_pylist()
            results = extract_tracks(paths, embedder, cfg.clips, batch_size=cfg.embedder.batch_size,
                                     decode_workers=workers, time_limit_s=cfg.catalogue.decode_timeout_s,
                                     resample_on_device=cfg.embedder.resample_on_device)
            for i, clips in results:
                track_id, path = ids[i], paths[i]
                if isinstance(clips, SoundalikeError):
                    yield _error_batch(track_id, path, type(clips).__name__, str(clips))
                elif isinstance(clips, Exception):  # a bad file must never stop the job
                    yield _error_batch(track_id, path, type(clips).__name__,
                                       f"unexpected error embedding {path}: {clips}")
                elif len(clips) == 0:
                    yield _error_batch(track_id, path, "TooShort",
                                       f"{path}: {clips.duration_s:.2f} s of audio is shorter than clips.min_tail_s={cfg.clips.min_tail_s}")
                else:
                    rows.add(track_id, path, clips)
                    if rows.n >= _ROWS_PER_BATCH:
                        yield rows.take()
        if rows.n:
            yield rows.take()

    return embed


class _ClipRows:
    """Clip rows of finished tracks, turned into one Arrow batch of ``_OUT`` without pandas.

    The vectors go to Arrow as one flat float32 buffer with list offsets, not one Python object
    per clip: building the batch costs a copy of the numbers, not a conversion per row.
    """

    def __init__(self):
        self._parts: list = []
        self.n = 0

    def add(self, track_id: str, path: str, clips) -> None:
        self._parts.append((track_id, path, clips))
        self.n += len(clips)

    def take(self) -> pa.RecordBatch:
        parts, n = self._parts, self.n
        self._parts, self.n = [], 0
        counts = [len(c) for _, _, c in parts]
        vectors = np.concatenate([c.vectors for _, _, c in parts]).astype(np.float32, copy=False)  # [n, dim]
        dim = vectors.shape[1]
        offsets = np.arange(0, (n + 1) * dim, dim, dtype=np.int32)
        columns = [
            pa.array([t for (t, _, _), k in zip(parts, counts) for _ in range(k)], pa.string()),
            pa.array([p for (_, p, _), k in zip(parts, counts) for _ in range(k)], pa.string()),
            pa.array(np.concatenate([np.arange(k, dtype=np.int32) for k in counts])),
            pa.array(np.concatenate([c.start_s for _, _, c in parts]).astype(np.float64)),
            pa.array(np.concatenate([c.end_s for _, _, c in parts]).astype(np.float64)),
            pa.array(np.concatenate([c.rms_db for _, _, c in parts]).astype(np.float32)),
            pa.array(np.concatenate([c.is_silent for _, _, c in parts]).astype(bool)),
            pa.array(np.concatenate([c.is_noise for _, _, c in parts]).astype(bool)),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(vectors.reshape(-1))),
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=_OUT_ARROW)


def _error_batch(track_id: str, path: str, error_class: str, message: str) -> pa.RecordBatch:
    """One ``_OUT`` row recording that ``path`` failed: clip_idx -1 and no clip columns."""
    values = {f.name: None for f in _OUT.fields}
    values.update(track_id=track_id, path=path, clip_idx=-1, error_class=error_class, message=message)
    return pa.RecordBatch.from_pylist([values], schema=_OUT_ARROW)


@dataclass
class EmbedSummary(StageSummary):
    """What one embed run did."""

    embedder: str
    tracks: int
    clips: int
    silent_clips: int
    noise_clips: int
    errors: int
    audio_s: float
    seconds: float
    #: Wall seconds per phase: "plan" (what is to do), "compute" (decode and embed on the
    #: workers), "write" (the MERGEs and error rows).
    phase_seconds: dict = field(default_factory=dict)


def balanced_partitions(durations: Sequence[float], n: int) -> list[int]:
    """A partition index for each track, so the partitions hold near-equal audio.

    Longest first into the least-loaded partition (LPT): with hash partitioning a 400-track
    catalogue split 8 ways differs by ~15 % between partitions, and the core that gets the
    heaviest one finishes alone. Unknown durations count as the median.
    """
    if n < 1:
        raise ValueError(f"need at least one partition, got {n}")
    known = [d for d in durations if d is not None and d > 0]
    default = float(np.median(known)) if known else 1.0
    weights = [d if d is not None and d > 0 else default for d in durations]
    loads = [(0.0, p) for p in range(n)]
    out = [0] * len(weights)
    for i in sorted(range(len(weights)), key=lambda i: -weights[i]):
        load, p = heapq.heappop(loads)
        out[i] = p
        heapq.heappush(loads, (load + weights[i], p))
    return out


def _hash_keys(spark: SparkSession, n: int) -> list[int]:
    """For each partition p < n, an integer key that ``repartition(n, key)`` sends to p.

    Spark hash-partitions by ``pmod(murmur3(key), n)``, the same hash ``F.hash`` computes, so a
    tiny query finds the keys. (The RDD ``partitionBy`` would be simpler but Spark Connect, as
    on Unity Catalog shared clusters, has no RDDs.)
    """
    keys: dict[int, int] = {}
    span = 0
    while len(keys) < n:
        rows = spark.range(span, span + 32 * n).select(
            "id", F.expr(f"pmod(hash(id), {n})").alias("p")
        ).groupBy("p").agg(F.min("id").alias("id")).collect()
        for r in rows:
            keys.setdefault(int(r["p"]), int(r["id"]))
        span += 32 * n
    return [keys[p] for p in range(n)]


#: Table properties: on ``clips``, the flag thresholds per clip policy (this prefix + policy);
#: on ``ingest_errors``, the settings the embed errors were last recorded under.
_FLAGS_PROPERTY, _SETTINGS_PROPERTY = "soundalike.flags.", "soundalike.embed_settings"


def _property(spark: SparkSession, table: str, key: str) -> str | None:
    rows = spark.sql(f"SHOW TBLPROPERTIES {table}").collect()
    return next((r["value"] for r in rows if r["key"] == key), None)


def _set_property(spark: SparkSession, table: str, key: str, value: str) -> None:
    spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ('{key}' = '{value}')")


def run_embed(cfg: Config, spark: SparkSession | None = None) -> EmbedSummary:
    """Run the embed stage; see the module docstring."""
    started = time.perf_counter()
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)  # fail fast on missing weights
    spark = spark or get_spark(cfg)
    ensure_tables(spark, cfg)
    policy = clip_policy(cfg.clips)
    tracks = spark.table(cfg.tables.name("tracks"))
    clips_t = spark.table(cfg.tables.name("clips")).where(F.col("clip_policy") == policy)
    emb_t = spark.table(cfg.tables.name("embeddings")).where(
        (F.col("clip_policy") == policy) & (F.col("embedder") == embedder.key)
    )
    errors_t = spark.table(cfg.tables.name("ingest_errors")).where(F.col("stage") == "embed")
    # Settings that are not part of the tables' keys, kept as table properties: the flag
    # thresholds the clips of this policy were flagged with, and the settings the last embed
    # errors were found under. When either changed, the stored flags are redone (decode, flag,
    # MERGE over the clips), and files that failed under other settings are tried again.
    flags, flags_key = flags_policy(cfg.clips), _FLAGS_PROPERTY + policy.replace("/", "_")
    settings = f"{policy} {embedder.key} flags={flags} timeout={cfg.catalogue.decode_timeout_s:g}"
    stored_flags = _property(spark, cfg.tables.name("clips"), flags_key)
    stored_settings = _property(spark, cfg.tables.name("ingest_errors"), _SETTINGS_PROPERTY)
    reflag = stored_flags not in (None, flags)

    # One path per content: byte-identical copies are embedded once.
    candidates = tracks.groupBy("track_id").agg(
        F.min("path").alias("path"), F.max("ingested_at").alias("ingested_at"), F.max("duration_s").alias("duration_s"),
    )
    done = clips_t.select("track_id").distinct().join(emb_t.select("track_id").distinct(), "track_id")
    if reflag:
        done = done.limit(0)
    quarantined = errors_t.join(tracks.select("path", "ingested_at"), "path").where(
        F.col("seen_at") >= F.col("ingested_at")
    ).select("path")
    if stored_settings not in (None, settings):
        quarantined = quarantined.limit(0)
    # Collected, so that what is to do is fixed now: a plan over the tables would change under
    # our own writes (Spark re-evaluates cached plans of tables that were written).
    todo_rows = (
        candidates.join(done, "track_id", "left_anti").join(quarantined, "path", "left_anti")
        .select("track_id", "path", "duration_s").collect()
    )
    n_todo = len(todo_rows)
    if stored_settings not in (None, settings):
        # The embed errors were found under other settings (another clip policy, embedder, flag
        # thresholds or time limit): those of files that are done under these are not true here.
        forget_errors(spark, cfg, tracks.select("path", "track_id").join(done, "track_id"), stage="embed")
    phases = {"plan": round(time.perf_counter() - started, 2)}

    def record_settings() -> None:  # after the writes: a crash before them redoes the work
        if stored_flags != flags:
            _set_property(spark, cfg.tables.name("clips"), flags_key, flags)
        if stored_settings != settings:
            _set_property(spark, cfg.tables.name("ingest_errors"), _SETTINGS_PROPERTY, settings)

    if n_todo == 0:
        record_settings()
        return EmbedSummary(embedder.key, 0, 0, 0, 0, 0, 0.0, phases["plan"], phases)

    mark = time.perf_counter()
    partitions = max(1, min(n_todo, spark.sparkContext.defaultParallelism * 2))
    keys = _hash_keys(spark, partitions)
    parts = balanced_partitions([r["duration_s"] for r in todo_rows], partitions)
    todo = spark.createDataFrame(
        [(r["track_id"], r["path"], keys[p]) for r, p in zip(todo_rows, parts)],
        "track_id string, path string, part long",
    )
    # Checkpointed: every clip is computed once, and the writes below cannot re-trigger it.
    out = (
        todo.repartition(partitions, "part").drop("part")
        .mapInArrow(_embed_batches(config_to_dict(cfg)), _OUT)
        .localCheckpoint(eager=True)
    )
    good = out.where(F.col("error_class").isNull())
    bad = out.where(F.col("error_class").isNotNull())
    stats = out.agg(
        F.count(F.when(F.col("error_class").isNull(), 1)).alias("clips"),
        F.count(F.when(F.col("error_class").isNotNull(), 1)).alias("bad"),
        F.sum(F.col("is_silent").cast("int")).alias("silent"),
        F.sum(F.col("is_noise").cast("int")).alias("noise"),
        F.countDistinct(F.when(F.col("error_class").isNull(), F.col("track_id"))).alias("tracks"),
        F.sum(F.col("end_s") - F.col("start_s")).alias("audio_s"),
    ).first()
    phases["compute"] = round(time.perf_counter() - mark, 2)
    mark = time.perf_counter()
    now = F.current_timestamp()
    if stats["clips"]:
        clip_rows = good.select(
            "track_id", F.lit(policy).alias("clip_policy"), "clip_idx", "start_s", "end_s", "rms_db",
            "is_silent", "is_noise", now.alias("created_at"),
        ).select(*[f.name for f in CLIPS.fields])
        emb_rows = good.select(
            "track_id", F.lit(policy).alias("clip_policy"), "clip_idx", F.lit(embedder.key).alias("embedder"),
            "vector", now.alias("created_at"),
        ).select(*[f.name for f in EMBEDDINGS.fields])
        # Known non-empty, so no counting first; the MERGE still skips keys a crashed run wrote.
        # The two MERGEs run at once (each is mostly driver planning and a Delta commit). A track
        # is done only with both clips and embeddings, so a crash after either is redone.
        with ThreadPoolExecutor(2) as pool:
            clip_keys = ("track_id", "clip_policy", "clip_idx")
            writes = [
                pool.submit(insert_new, spark, cfg.tables.name("embeddings"), emb_rows,
                            keys=("track_id", "clip_policy", "clip_idx", "embedder"), count_first=False),
                # Flags redone under new thresholds replace the stored ones; otherwise only new keys go in.
                pool.submit(upsert, spark, cfg.tables.name("clips"), clip_rows, keys=clip_keys, count=stats["clips"])
                if reflag else
                pool.submit(insert_new, spark, cfg.tables.name("clips"), clip_rows, keys=clip_keys, count_first=False),
            ]
            for w in writes:
                w.result()
    n_errors = 0
    if stats["bad"] or errors_t.limit(1).count():
        n_errors = record_errors(
            spark, cfg, bad.select("path", F.lit("embed").alias("stage"), "error_class", "message"),
            clear_paths=good.select("path"), stage="embed",
        )
    record_settings()
    phases["write"] = round(time.perf_counter() - mark, 2)
    return EmbedSummary(
        embedder=embedder.key,
        tracks=int(stats["tracks"] or 0),
        clips=int(stats["clips"] or 0),
        silent_clips=int(stats["silent"] or 0),
        noise_clips=int(stats["noise"] or 0),
        errors=n_errors,
        audio_s=round(float(stats["audio_s"] or 0.0), 1),
        seconds=round(time.perf_counter() - started, 2),
        phase_seconds=phases,
    )
