"""Evaluate stage: measure the newest index before it is promoted, and log it to its run.

Loads the index run's artifacts into a :class:`soundalike.search.Searcher` (with the config the
index was built with), runs :func:`soundalike.evaluation.evaluate` on the catalogue's tracks
(styles and motif groups from the sidecar metadata in ``tracks.metadata``), and logs metrics
(``eval_*``), ``evaluation.json`` and ``evaluation.png`` to the index's MLflow run. A run that
already holds an evaluation with the same settings is not evaluated again. A catalogue with no
track long enough for an excerpt query is not an error: those queries are skipped, the summary's
``note`` says why, and the pipeline goes on (the tag and version measures still run).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from soundalike.config import Config, config_from_dict
from soundalike.errors import SoundalikeError
from soundalike.evaluation import EvalTrack, evaluate, plot_summary
from soundalike.search import Searcher
from soundalike_pipelines.index_build import _latest_index_run, _tmp_root
from soundalike_pipelines.session import ensure_tables, get_spark
from soundalike_pipelines.summary import StageSummary
from soundalike_pipelines.writes import unreadable_paths

EVAL_TAG = "soundalike.evaluation"
NOTE_TAG = "soundalike.evaluation.note"


@dataclass
class EvaluateSummary(StageSummary):
    run_id: str
    evaluated: bool
    metrics: dict
    seconds: float
    note: str | None = None  # what was left out and why (e.g. no track long enough for excerpts)


def eval_tracks(spark: SparkSession, cfg: Config) -> list[EvalTrack]:
    """The catalogue's tracks with the ground truth the sidecar gives (one path per track id)."""
    rows = spark.table(cfg.tables.name("tracks")).select("track_id", "path", "duration_s", "metadata").collect()
    # A stored file that became unreadable keeps its clips in the index, but no excerpt can be cut
    # from it: left out (another copy of the same bytes stands in for it).
    unreadable = {r["path"] for r in unreadable_paths(spark, cfg).collect()}
    seen = {}
    for r in sorted((r for r in rows if r["path"] not in unreadable), key=lambda r: r["path"]):
        meta = json.loads(r["metadata"]) if r["metadata"] else {}
        seen.setdefault(r["track_id"], EvalTrack(r["track_id"], r["path"], float(r["duration_s"] or 0.0),
                                                 meta.get("style"), meta.get("motif_id")))
    return list(seen.values())


def run_evaluate(cfg: Config, spark: SparkSession | None = None, *, progress: bool = True) -> EvaluateSummary:
    """Evaluate the newest finished index run; see the module docstring."""
    n_excerpts, seed = cfg.evaluation.n_excerpts, cfg.evaluation.seed
    import mlflow

    from soundalike.mlflow_model import configure_mlflow

    started = time.perf_counter()
    spark = spark or get_spark(cfg)
    ensure_tables(spark, cfg)
    experiment_id = configure_mlflow(cfg)
    run = _latest_index_run(experiment_id)
    if run is None:
        raise SoundalikeError("no finished index run to evaluate: run the index stage first")
    settings = json.dumps({"n_excerpts": n_excerpts, "seed": seed}, sort_keys=True)
    if run.data.tags.get(EVAL_TAG) == settings:
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("eval_")}
        return EvaluateSummary(run.info.run_id, False, metrics, round(time.perf_counter() - started, 2),
                               run.data.tags.get(NOTE_TAG))
    tracks = eval_tracks(spark, cfg)
    with tempfile.TemporaryDirectory(dir=_tmp_root(cfg)) as tmp:
        index_dir = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="index", dst_path=tmp)
        built_with = config_from_dict(json.loads((Path(index_dir) / "config.json").read_text()))
        searcher = Searcher.load(index_dir, built_with)
        # Only tracks the index holds: a file quarantined by the embed stage has no clips to find.
        indexed = set(searcher.index.track_ids)
        tracks = [t for t in tracks if t.track_id in indexed]
        summary = evaluate(searcher.search, tracks, n_excerpts=n_excerpts, seed=seed,
                           hop_s=built_with.clips.hop_s, progress=progress)
        metrics = flat_metrics(summary)
        skipped = summary["excerpts"].get("skipped")
        note = f"excerpt queries skipped: {skipped}" if skipped else None
        if searcher.fingerprints is not None and not skipped:
            # The same excerpts through the embedding alone: what the fingerprint index adds.
            searcher.fingerprints = None
            baseline = evaluate(searcher.search, tracks, n_excerpts=n_excerpts, seed=seed,
                                hop_s=built_with.clips.hop_s, progress=progress, excerpts_only=True)
            summary["embedding_only"] = {"excerpts": baseline["excerpts"]}
            metrics.update({k.replace("eval_", "eval_embedding_only_", 1): v for k, v in flat_metrics(baseline).items()})
        out = Path(tmp) / "evaluation"
        out.mkdir()
        if note:
            summary["note"] = note
        (out / "evaluation.json").write_text(json.dumps(summary, indent=2))
        plot_summary(summary, out / "evaluation.png")
        with mlflow.start_run(run_id=run.info.run_id):
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(out), artifact_path="evaluation")
            if note:
                mlflow.set_tag(NOTE_TAG, note)
            mlflow.set_tag(EVAL_TAG, settings)
    return EvaluateSummary(run.info.run_id, True, metrics, round(time.perf_counter() - started, 2), note)


def flat_metrics(summary: dict) -> dict:
    """MLflow metric names for an evaluation summary (``eval_top1``, ``eval_phone_top1``, ...)."""
    out = {}
    overall = summary["excerpts"]["overall"]
    for key in ("top1", "top10", "mrr"):
        if overall[key] is not None:
            out[f"eval_{key}"] = overall[key]
    for name, m in summary["excerpts"]["by_degradation"].items():
        safe = name.replace("+", "plus").replace("-", "minus")
        for key in ("top1", "mrr"):
            if m[key] is not None:
                out[f"eval_{safe}_{key}"] = m[key]
    if summary.get("tags"):
        out["eval_tag_precision_at_5"] = summary["tags"]["precision_at_5"]
    if summary.get("versions"):
        out["eval_version_mrr"] = summary["versions"]["mrr"]
    return out
