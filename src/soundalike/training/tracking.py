"""MLflow for a training run: params, the loss curve, the held-out metrics, the model, the registry.

The branch directory the ``siamese`` embedder reads (``siamese.json`` and ``siamese.safetensors``,
plus ``training.json``) is logged as the run's ``siamese/`` artifacts and registered as an MLflow
model with a signature (:mod:`soundalike.mlflow_embedder`: it embeds audio files with the branch;
Unity Catalog registers nothing else). To embed a catalogue with a registered version, download
its weights and point ``embedder.weights_path`` at them::

    mlflow artifacts download -u models:/soundalike_siamese/1 -d /tmp/m   # then /tmp/m/artifacts/siamese

Metric names: ``train_loss`` (per epoch, ``step`` = epoch), and for the held-out evaluation
``<learned|baseline>_<catalogue|heldout>_<precision_at_5|mean_tag_similarity_at_5>`` plus
``gain_...`` (learned minus baseline); see :mod:`soundalike.training.train` for what they mean.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from soundalike.config import Config
from soundalike.errors import ConfigError
from soundalike.training.train import TrainingResult

_METRICS = ("precision_at_5", "mean_tag_similarity_at_5")
_GALLERIES = ("catalogue", "heldout")


def flat_metrics(evaluation: dict) -> dict[str, float]:
    """The evaluation's numbers as MLflow metric names (see the module docstring)."""
    out: dict[str, float] = {}
    for gallery in _GALLERIES:
        for metric in _METRICS:
            learned = evaluation["learned"][gallery][metric]
            base = evaluation["baseline"][gallery][metric]
            if learned is None or base is None:
                continue
            out[f"learned_{gallery}_{metric}"] = learned
            out[f"baseline_{gallery}_{metric}"] = base
            out[f"gain_{gallery}_{metric}"] = round(learned - base, 4)
    return out


def log_training_run(cfg: Config, result: TrainingResult) -> dict:
    """Log ``result`` as an MLflow run in ``cfg.mlflow.experiment`` and register the model.

    Returns
    -------
    dict
        ``{"run_id", "experiment_id", "artifact_uri", "model_name", "model_version"}``
        (the last two ``None`` when ``training.register`` is false).

    Raises
    ------
    ConfigError
        ``result`` has no held-out metrics (nothing is logged).
    """
    import mlflow
    from mlflow import MlflowClient

    from soundalike.mlflow_embedder import log_embedder_model
    from soundalike.mlflow_model import configure_mlflow

    t = cfg.training
    metrics = flat_metrics(result.evaluation)
    if not metrics:
        # train_similarity refuses this before training; a result built another way must not slip through.
        raise ConfigError(f"the run in {result.model_dir} has no held-out metrics, so it is neither logged nor "
                          "registered; it needs held-out tracks with clips (training.heldout_fraction)")
    experiment_id = configure_mlflow(cfg)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train_{t.branch}_{t.loss}") as run:
        mlflow.set_tags({"soundalike.stage": "train", "soundalike.embedder": result.embedder_key,
                         "soundalike.weights_sha256": result.weights_sha256})
        mlflow.log_params({k: str(v)[:500] for k, v in result.params.items()})
        for epoch, loss in enumerate(result.losses, start=1):
            mlflow.log_metric("train_loss", loss, step=epoch)
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(result.model_dir), artifact_path="siamese")
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_losses(result.losses, Path(tmp) / "loss_curve.png", title=f"{t.branch} / {t.loss}")
            mlflow.log_artifact(str(png))
        version = None
        if t.register:
            # An MLflow model with a signature (what Unity Catalog registers), carrying the branch.
            served = dataclasses.replace(cfg, embedder=dataclasses.replace(
                cfg.embedder, name="siamese", weights_path=str(result.model_dir), options={}))
            info = log_embedder_model(result.model_dir, served, example_audio=b"RIFF", registered_model_name=t.model_name)
            version = int(info.registered_model_version)
            client = MlflowClient()
            client.set_model_version_tag(t.model_name, str(version), "embedder", result.embedder_key)
            client.set_model_version_tag(t.model_name, str(version), "weights_sha256", result.weights_sha256)
        return {"run_id": run.info.run_id, "experiment_id": experiment_id, "artifact_uri": run.info.artifact_uri,
                "model_name": t.model_name if t.register else None, "model_version": version}


def plot_losses(losses: list[float], path: str | Path, *, title: str = "") -> Path:
    """A PNG of the mean training loss per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss")
    ax.set_yscale("log" if losses and min(losses) > 0 else "linear")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
