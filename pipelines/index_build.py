"""Index and register stages: FAISS index as an MLflow artifact, then the registered pyfunc.

``run_index`` reads the embeddings of the configured embedder (skipping silent/noise clips unless
``clips.index_flagged``), builds the index :func:`soundalike.index.choose_factory` picks, measures
recall@10 against exact search for approximate indexes, and logs an MLflow run with params,
metrics and the index directory as artifacts. Its inputs are fingerprinted (Delta table versions,
embedder, clip policy, index settings): a run whose fingerprint matches the last finished index
run builds nothing.

``run_register`` logs the ``soundalike_search`` pyfunc into the newest finished index run and
registers it, then points the ``champion`` alias at it when :func:`champion_gate` allows (its
evaluation is not worse than the champion's). A half-built index is never registered:
only finished runs are considered, and the index directory is complete before the run ends.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from soundalike.config import Config, config_to_dict
from soundalike.embedders import create_embedder
from soundalike.errors import SoundalikeError
from soundalike.extract import clip_policy
from soundalike.index import build_index, choose_factory, recall_at_k, record_checksums
from soundalike.search import TRACKS_FILE
from soundalike_pipelines.endpoint import point_endpoint_at
from soundalike_pipelines.fingerprints import load_fingerprints, update_fingerprints
from soundalike_pipelines.session import ensure_tables, get_spark
from soundalike_pipelines.summary import StageSummary

STAGE_TAG = "soundalike.stage"
FINGERPRINT_TAG = "soundalike.fingerprint"
INDEX_RUN_TAG = "soundalike.index_run"
#: On index runs: a digest of the track ids the index holds (evaluations compare only within one).
CATALOGUE_TAG = "soundalike.catalogue"
#: On model versions: a digest of the config sections the served model bakes in (query, ...).
SERVING_CONFIG_TAG = "soundalike.serving_config"
CHAMPION = "champion"
GATE_TAG = "soundalike.gate"


@dataclass
class IndexSummary(StageSummary):
    run_id: str
    built: bool
    vectors: int
    dim: int
    factory: str
    build_seconds: float
    recall_at_10: float | None
    seconds: float



@dataclass
class RegisterSummary(StageSummary):
    model_name: str
    version: str
    registered: bool
    index_run_id: str
    champion: str | None
    gate: str
    endpoint: str
    seconds: float



def _table_version(spark: SparkSession, name: str) -> int:
    return int(spark.sql(f"DESCRIBE HISTORY {name}").agg(F.max("version")).first()[0])


def run_index(cfg: Config, spark: SparkSession | None = None) -> IndexSummary:
    """Build the clip index and log it as an MLflow run (skipped when its inputs are unchanged)."""
    import mlflow

    from soundalike.mlflow_model import configure_mlflow

    started = time.perf_counter()
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    spark = spark or get_spark(cfg)
    ensure_tables(spark, cfg)
    policy = clip_policy(cfg.clips)
    if cfg.fingerprint.enabled:  # landmarks of new tracks first, so the inputs below are complete
        update_fingerprints(spark, cfg)
    inputs = ("tracks", "clips", "embeddings") + (("fingerprints",) if cfg.fingerprint.enabled else ())
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "versions": {t: _table_version(spark, cfg.tables.name(t)) for t in inputs},
                "embedder": embedder.key,
                "policy": policy,
                "index": config_to_dict(cfg.index),
                "index_flagged": cfg.clips.index_flagged,
                **({"fingerprint": config_to_dict(cfg.fingerprint)} if cfg.fingerprint.enabled else {}),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    experiment_id = configure_mlflow(cfg)
    previous = _latest_index_run(experiment_id)
    if previous is not None and previous.data.tags.get(FINGERPRINT_TAG) == fingerprint:
        p = previous.data.params
        return IndexSummary(previous.info.run_id, False, int(p["vectors"]), int(p["dim"]), p["index_factory"],
                            float(previous.data.metrics.get("build_seconds", 0.0)),
                            previous.data.metrics.get("recall_at_10"), round(time.perf_counter() - started, 2))

    emb = spark.table(cfg.tables.name("embeddings")).where(
        (F.col("embedder") == embedder.key) & (F.col("clip_policy") == policy)
    )
    clips = spark.table(cfg.tables.name("clips")).where(F.col("clip_policy") == policy)
    if not cfg.clips.index_flagged:
        clips = clips.where(~F.col("is_silent") & ~F.col("is_noise"))
    tracks = spark.table(cfg.tables.name("tracks"))
    live = tracks.select("track_id").distinct()
    rows = (
        emb.join(clips.select("track_id", "clip_idx", "start_s"), ["track_id", "clip_idx"])
        .join(live, "track_id")
        .select("track_id", "clip_idx", "start_s", "vector")
        .orderBy("track_id", "clip_idx")
        .toPandas()
    )
    if rows.empty:
        raise SoundalikeError(_why_nothing_to_index(spark, cfg, tracks, clips, emb, embedder.key, policy))
    vectors = np.stack(rows["vector"].to_numpy()).astype(np.float32)
    factory = choose_factory(len(vectors), vectors.shape[1], cfg.index)
    t0 = time.perf_counter()
    index = build_index(vectors, rows["track_id"].to_numpy(), rows["clip_idx"].to_numpy(), rows["start_s"].to_numpy(),
                        embedder=embedder.key, factory=factory, params=cfg.index)
    build_seconds = time.perf_counter() - t0
    recall = None if factory == "Flat" else recall_at_k(index, vectors, k=10, sample=1000)

    track_meta = (
        tracks.groupBy("track_id")
        # Byte-identical copies share a track_id: title and tags come from the same file as the
        # path (the first by name), so they do not change from one build to the next.
        .agg(F.min("path").alias("path"), F.min_by(F.struct("title", "tags"), "path").alias("meta"))
        .select("track_id", "path", "meta.title", "meta.tags")
        .toPandas()
    )
    with tempfile.TemporaryDirectory(dir=_tmp_root(cfg)) as tmp:
        index_dir = Path(tmp) / "index"
        index.save(index_dir)
        if cfg.fingerprint.enabled:  # beside the FAISS file, in the same manifest
            load_fingerprints(spark, cfg)[0].save(index_dir)
        track_meta.to_parquet(index_dir / TRACKS_FILE, index=False)
        (index_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
        record_checksums(index_dir, [TRACKS_FILE, "config.json"])  # verified at load, with the rest
        with mlflow.start_run(experiment_id=experiment_id, run_name="index") as run:
            mlflow.set_tags({STAGE_TAG: "index", FINGERPRINT_TAG: fingerprint,
                             CATALOGUE_TAG: catalogue_digest(rows["track_id"].unique())})
            mlflow.log_params({
                "embedder": embedder.key, "index_factory": factory, "vectors": len(vectors),
                "dim": int(vectors.shape[1]), "clip_policy": policy, "tracks": int(rows["track_id"].nunique()),
                "index_flagged": cfg.clips.index_flagged,
            })
            metrics = {"build_seconds": build_seconds}
            if recall is not None:
                metrics["recall_at_10"] = recall
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(index_dir), artifact_path="index")
    return IndexSummary(run.info.run_id, True, len(vectors), int(vectors.shape[1]), factory,
                        round(build_seconds, 3), recall, round(time.perf_counter() - started, 2))


def _why_nothing_to_index(spark, cfg: Config, tracks, clips, emb, embedder_key: str, policy: str) -> str:
    """Why the index stage found no vector to index, in the terms of what the user can do."""
    if tracks.limit(1).count() == 0:
        errors = spark.table(cfg.tables.name("ingest_errors")).count()
        return (f"nothing to index: the tracks table is empty (catalogue.path={cfg.catalogue.path} has no "
                f"readable audio file; {errors} file(s) in {cfg.tables.name('ingest_errors')})")
    if emb.limit(1).count() == 0:
        return f"no embeddings for embedder {embedder_key} and clip policy {policy}: run the embed stage first"
    if clips.limit(1).count() == 0:
        return (f"every clip of clip policy {policy} is flagged silent or noise-like, so none is indexed "
                f"(set clips.index_flagged=true to index them anyway)")
    return f"no embeddings of current tracks for embedder {embedder_key} and clip policy {policy}: run the embed stage"


def run_register(cfg: Config, spark: SparkSession | None = None) -> RegisterSummary:
    """Register the newest finished index run as the ``soundalike_search`` model (once per run)."""
    import mlflow
    from mlflow import MlflowClient

    from soundalike.mlflow_model import configure_mlflow, log_search_model

    started = time.perf_counter()
    experiment_id = configure_mlflow(cfg)
    run = _latest_index_run(experiment_id)
    if run is None:
        raise SoundalikeError("no finished index run to register: run the index stage first")
    client = MlflowClient()
    name = cfg.mlflow.model_name
    serving = serving_config_digest(cfg)
    # Once per index run and serving config: a changed `query` section (say) registers the same
    # index again, so that the served model answers by the config the user set.
    existing = [v for v in _versions(client, name) if v.tags.get(INDEX_RUN_TAG) == run.info.run_id
                and v.tags.get(SERVING_CONFIG_TAG, serving) == serving]
    if existing:
        champion = _champion_version(client, name)
        mine = str(existing[0].version)
        if champion != mine and existing[0].tags.get(GATE_TAG, "").startswith("promoted"):
            # The serving config went back to one this index was registered with: serve that version.
            client.set_registered_model_alias(name, CHAMPION, mine)
            champion = mine
        # Idempotent: an endpoint update that failed last time is retried with the same champion.
        endpoint = point_endpoint_at(cfg, name, champion) if champion else "no champion"
        return RegisterSummary(name, str(existing[0].version), False, run.info.run_id, champion,
                               existing[0].tags.get(GATE_TAG, ""), endpoint, round(time.perf_counter() - started, 2))
    with tempfile.TemporaryDirectory(dir=_tmp_root(cfg)) as tmp:
        index_dir = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="index", dst_path=tmp)
        with mlflow.start_run(run_id=run.info.run_id):
            info = log_search_model(index_dir, cfg, example_audio=_example_audio(), registered_model_name=name)
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, INDEX_RUN_TAG, run.info.run_id)
    client.set_model_version_tag(name, version, SERVING_CONFIG_TAG, serving)
    promote, gate = champion_gate(client, name, run)
    client.set_model_version_tag(name, version, GATE_TAG, gate)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    champion = _champion_version(client, name)
    endpoint = point_endpoint_at(cfg, name, champion) if champion else "no champion"
    return RegisterSummary(name, version, True, run.info.run_id, champion, gate, endpoint,
                           round(time.perf_counter() - started, 2))


#: Evaluation metrics the new index must not be worse on to become champion.
GATE_METRICS = ("eval_top1", "eval_mrr", "eval_tag_precision_at_5")


def champion_gate(client, name: str, run) -> tuple[bool, str]:
    """Whether the index ``run`` may replace the current champion, and why (logged as a tag).

    Promoted when there is no champion yet, or when the index holds other tracks than the
    champion's (:data:`CATALOGUE_TAG`: files were added or removed, so evaluations on the two
    catalogues are not comparable, and a removed track must leave the served model), or when no
    metric of :data:`GATE_METRICS` that both runs have is lower for the new run. On the same
    tracks, a new run without evaluation metrics is not promoted over an evaluated champion.
    """
    current = _champion_version(client, name)
    if current is None:
        return True, "promoted: no champion yet"
    champion_run_id = client.get_model_version(name, current).tags.get(INDEX_RUN_TAG)
    champion_run = client.get_run(champion_run_id) if champion_run_id else None
    new_catalogue = run.data.tags.get(CATALOGUE_TAG)
    if new_catalogue is not None and (champion_run is None or champion_run.data.tags.get(CATALOGUE_TAG) != new_catalogue):
        return True, (f"promoted over v{current}: the catalogue changed ({run.data.params.get('tracks', '?')} tracks, "
                      f"was {champion_run.data.params.get('tracks', '?') if champion_run else '?'}); "
                      f"evaluations of different catalogues are not compared")
    old = champion_run.data.metrics if champion_run else {}
    new = run.data.metrics
    shared = [m for m in GATE_METRICS if m in old and m in new]
    if not shared:
        if any(m in old for m in GATE_METRICS):
            return False, f"kept champion v{current}: the new index has no evaluation metrics"
        return True, f"promoted over v{current}: neither has evaluation metrics"
    worse = [f"{m} {new[m]:.4f} < {old[m]:.4f}" for m in shared if new[m] < old[m]]
    if worse:
        return False, f"kept champion v{current}: " + "; ".join(worse)
    return True, f"promoted over v{current}: " + ", ".join(f"{m} {new[m]:.4f} >= {old[m]:.4f}" for m in shared)


def catalogue_digest(track_ids) -> str:
    """A short digest of a set of track ids (order and repeats do not matter)."""
    return hashlib.sha256("\n".join(sorted(set(map(str, track_ids)))).encode()).hexdigest()[:32]


def serving_config_digest(cfg: Config) -> str:
    """A digest of the config sections the served model applies at query time."""
    baked = {k: config_to_dict(getattr(cfg, k)) for k in ("query", "fingerprint", "clips", "embedder")}
    return hashlib.sha256(json.dumps(baked, sort_keys=True).encode()).hexdigest()[:32]


def _champion_version(client, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def _versions(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []


def _latest_index_run(experiment_id: str):
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{STAGE_TAG}` = 'index' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


def _tmp_root(cfg: Config) -> str:
    root = Path(cfg.workdir, "tmp")
    root.mkdir(parents=True, exist_ok=True)
    return str(root)


def _example_audio() -> bytes:
    """A 6 s, 8 kHz test tone as WAV bytes: the model's input example (small, deterministic)."""
    import soundfile as sf

    sr = 8000
    t = np.arange(6 * sr) / sr
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
