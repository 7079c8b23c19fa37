"""The MLflow shell around :class:`soundalike.search.Searcher`: the ``soundalike_search`` pyfunc.

The model carries everything it needs: the index directory and the configuration as MLflow
artifacts (checksummed, no pickle of data) and the ``soundalike`` package itself as a code path,
so ``mlflow models serve`` and Databricks Model Serving run the same code as the batch job.

Request (``dataframe_records`` / ``dataframe_split``): one row per query with ``audio_b64`` (the
audio file's bytes, base64), or ``text`` (a description such as ``"calm solo piano"``; needs an
embedder with a text tower, ``clap``) — or, only where the loader allowed it (``model_config``
key ``allowed_path_root``; never when served), ``path`` to a file under that root. Each row gives
exactly one of them.
Params: ``max_results``, ``top_k_per_chunk``, ``vote_weight``, ``exclude_track_ids``,
``max_query_seconds``; their defaults (the signature's) are the logged config's ``query.*``
values (:func:`param_defaults`). Response: one object per row, ``{"results": [...], ...}``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from soundalike.config import Config, QueryConfig, config_from_dict, config_to_dict
from soundalike.embedders import uses_weights
from soundalike.errors import ConfigError, SoundalikeError

INPUT_COLUMNS = ("audio_b64", "path", "text")
PARAM_NAMES = ("max_results", "top_k_per_chunk", "vote_weight", "exclude_track_ids", "max_query_seconds")

try:  # MLflow is a dependency of the serving shell only; the core never imports this module.
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
except ImportError:  # pragma: no cover
    mlflow = None


def bad_request(message: str) -> Exception:
    """An error MLflow serving answers with HTTP 400 (shared by both pyfunc models)."""
    return MlflowException(message[:2000], error_code=INVALID_PARAMETER_VALUE)


class SoundalikeSearchModel(mlflow.pyfunc.PythonModel if mlflow else object):
    """Query fusion over the clip index, as an MLflow pyfunc."""

    def load_context(self, context) -> None:
        from soundalike.search import Searcher

        import torch

        cfg = config_from_dict(json.loads(Path(context.artifacts["config"]).read_text()))
        if "weights" in context.artifacts:
            # The model's own copy of the weights: a serving endpoint cannot read the UC Volume the
            # batch job used. The embedder's version holds the weights' SHA-256 and the Searcher
            # refuses an index built with another version, so a corrupted copy cannot serve.
            cfg = dataclasses.replace(
                cfg, embedder=dataclasses.replace(cfg.embedder, weights_path=context.artifacts["weights"])
            )
        self.cfg: Config = cfg
        model_config = getattr(context, "model_config", None) or {}
        if not torch.cuda.is_available():
            # One torch thread per serving worker: a query's clips are few, and OpenMP threads
            # contending with other work on a shared CPU made a 3-min query 10x slower.
            torch.set_num_threads(int(model_config.get("torch_threads", 1)))
        self.searcher = Searcher.load(context.artifacts["index"], cfg)
        root = model_config.get("allowed_path_root")
        self.allowed_root = Path(root).resolve() if root else None

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[dict]:
        if not isinstance(model_input, pd.DataFrame):
            raise bad_request(f"input must be a table of queries, got {type(model_input).__name__}")
        # Through MLflow (served, or a loaded PyFuncModel) columns and params the signature does not
        # name are dropped before predict runs, so the unknown-name checks here and in _clean_params
        # only catch direct calls; served, a request with none of the columns arrives with none.
        unknown = [c for c in model_input.columns if c not in INPUT_COLUMNS]
        if unknown or not any(c in model_input.columns for c in INPUT_COLUMNS):
            raise bad_request(
                "input columns must be audio_b64 (base64 audio bytes), text (a description) or path; "
                + (f"got {list(model_input.columns)}" if len(model_input.columns)
                   else "got none of them (columns with other names are dropped)")
            )
        if len(model_input) == 0:
            raise bad_request("input holds no query rows")
        if len(model_input) > 16:
            raise bad_request(f"at most 16 queries per request, got {len(model_input)}")
        query_params = _clean_params(params or {})
        outputs = []
        for i, row in enumerate(model_input.to_dict("records")):
            text = _text(row, i)
            source = None if text is not None else self._source(row, i)
            try:
                if text is not None:
                    outputs.append(self.searcher.search_text(text, **query_params))
                else:
                    outputs.append(self.searcher.search(source, **query_params))
            except SoundalikeError as exc:
                raise bad_request(f"query row {i}: {exc}") from None
        return outputs

    def _source(self, row: dict, i: int):
        audio = row.get("audio_b64")
        path = row.get("path")
        if isinstance(audio, str) and audio:
            limit = self.cfg.query.max_query_bytes
            if len(audio) > limit * 4 // 3 + 4:
                raise bad_request(f"query row {i}: audio is larger than query.max_query_bytes={limit}")
            try:
                data = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError):
                raise bad_request(f"query row {i}: audio_b64 is not valid base64") from None
            if not data:
                raise bad_request(f"query row {i}: audio is empty")
            return data
        if isinstance(path, str) and path:
            if self.allowed_root is None:
                raise bad_request(f"query row {i}: queries by path are disabled here; send audio_b64")
            resolved = Path(path).resolve()
            if not resolved.is_relative_to(self.allowed_root) or not resolved.is_file():
                raise bad_request(f"query row {i}: path must be an existing file under {self.allowed_root}")
            if resolved.stat().st_size > self.cfg.query.max_query_bytes:
                raise bad_request(f"query row {i}: file is larger than query.max_query_bytes")
            return resolved
        raise bad_request(f"query row {i}: give audio_b64 (base64 audio bytes) or text")


def _text(row: dict, i: int) -> str | None:
    """The row's text query, or None when it has none; a row with text and audio is refused."""
    text = row.get("text")
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None  # absent, or NaN where only other rows use the column
    if not isinstance(text, str):
        raise bad_request(f"query row {i}: text must be a string, got {type(text).__name__}")
    others = any(isinstance(row.get(c), str) and row.get(c) for c in ("audio_b64", "path"))
    if not text.strip():
        if others:
            return None  # an empty text cell beside the row's audio: an audio query
        raise bad_request(f"query row {i}: text is empty; describe the music, e.g. \"calm solo piano\"")
    if any(isinstance(row.get(c), str) and row.get(c) for c in ("audio_b64", "path")):
        raise bad_request(f"query row {i}: give one of audio_b64, path or text, not several")
    return text


def _clean_params(params: dict[str, Any]) -> dict[str, Any]:
    known = set(PARAM_NAMES)
    unknown = set(params) - known
    if unknown:
        raise bad_request(f"unknown params: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    out = {}
    for key, value in params.items():
        if key == "exclude_track_ids":
            value = [v for v in (list(value) if not isinstance(value, str) else [value]) if v]
        out[key] = value
    return out


# --------------------------------------------------------------------------- logging & registry


def configure_mlflow(cfg: Config, *, read_only: bool = False, model_uri: str | None = None) -> str | None:
    """Point MLflow at the configured stores; returns the experiment id.

    Local profiles leave the URIs null: tracking and registry then live in
    ``sqlite:///<workdir>/mlflow.db`` (a file store has no model registry) and artifacts in
    ``<workdir>/mlartifacts``. With ``read_only`` (query, serve, web: they only load a model) a
    missing local store is a :class:`ModelWeightsError` naming the work dir, instead of a new,
    empty store created there (a mistyped ``workdir``), unless ``model_uri`` is a path that
    needs no store; nothing is created, and None is returned.
    """
    from soundalike.errors import ModelWeightsError

    workdir = Path(cfg.workdir).resolve()
    tracking = cfg.mlflow.tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    registry = cfg.mlflow.registry_uri or tracking
    needs_store = model_uri is None or model_uri.startswith(("models:/", "runs:/"))
    if read_only and needs_store and not cfg.mlflow.tracking_uri and not (workdir / "mlflow.db").is_file():
        raise ModelWeightsError(
            f"no MLflow store at {workdir / 'mlflow.db'}: nothing has been registered under workdir={workdir} "
            "(check --set workdir, or run `soundalike pipeline` first)"
        )
    if tracking.startswith("sqlite:") and not read_only:
        workdir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
    if read_only:
        return None
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = None if cfg.mlflow.tracking_uri else (workdir / "mlartifacts").as_uri()
    return mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=location)


def log_search_model(index_dir: str | os.PathLike, cfg: Config, *, example_audio: bytes, registered_model_name: str | None):
    """Log the pyfunc (index, config and model weights as artifacts, this package as code) in the active run.

    Embedder weights (``embedder.weights_path``) travel as the ``weights`` artifact, so a serving
    endpoint loads them from the model, not from the path the batch job read. A LAION CLAP
    checkpoint given as a file travels with its text-model folder, and the logged config names
    the file in ``embedder.options.checkpoint``. laion-clap's model code travels as a code path
    (it must be installed with ``--no-deps``, which ``pip_requirements`` cannot say).

    Returns the ``ModelInfo``; registers it under ``registered_model_name`` when given.
    """
    import tempfile

    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    import soundalike

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"index": str(index_dir)}
        extra: tuple[str, ...] = ()
        code_paths = [str(Path(soundalike.__file__).parent)]
        if cfg.embedder.weights_path and uses_weights(cfg.embedder.name):
            weights, cfg = _weights_artifact(cfg, Path(tmp) / "weights")
            artifacts["weights"] = str(weights)
        elif cfg.embedder.weights_path:
            # mel reads no weights: a path set anyway (the bundle passes the weights volume for
            # every embedder) must not pack that whole volume into each model version.
            cfg = dataclasses.replace(cfg, embedder=dataclasses.replace(cfg.embedder, weights_path=None))
        if cfg.embedder.name == "clap" or (cfg.embedder.name == "siamese" and _siamese_base(cfg) == "clap"):
            laion = _laion_clap_package()
            if laion is not None:
                code_paths.append(laion)
                extra = LAION_CLAP_REQUIREMENTS
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config_to_dict(cfg), indent=2))
        artifacts["config"] = str(config_path)
        example = pd.DataFrame({"audio_b64": [base64.b64encode(example_audio).decode()]})
        # Every column optional: which one a row uses is checked in predict, with a clear message.
        # MLflow fills every param a request leaves out with the signature's default, so the
        # defaults must be the logged config's query.* values, or the config would never apply.
        signature = infer_signature(example, None, params=param_defaults(cfg.query))
        signature = ModelSignature(
            inputs=Schema([ColSpec("string", name, required=False) for name in INPUT_COLUMNS]),
            params=signature.params,
        )
        return mlflow.pyfunc.log_model(
            name="model",
            # Models from code: MLflow keeps pyfunc_entry.py's source, nothing is pickled.
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts=artifacts,
            code_paths=code_paths,
            signature=signature,
            input_example=(example, {"max_results": 5}),
            registered_model_name=registered_model_name,
            pip_requirements=pip_requirements(extra),
            # Keys a loader may override (MLflow only lets load_model set keys logged here):
            # paths stay disabled unless a local caller names a root.
            model_config={"allowed_path_root": "", "torch_threads": 1},
        )


def param_defaults(query: QueryConfig) -> dict[str, Any]:
    """The model signature's params and their defaults: the ``query`` settings the model is logged with.

    MLflow gives ``predict`` every signature param, filling those a request leaves out with
    these defaults, so they are the values a request without params runs with.

    Parameters
    ----------
    query : QueryConfig

    Returns
    -------
    dict
        One entry per name in :data:`PARAM_NAMES`; ``exclude_track_ids`` is ``[""]`` (a list of
        strings, which MLflow needs to infer the type; empty ids are dropped in ``predict``).
    """
    defaults = {
        "max_results": int(query.max_results),
        "top_k_per_chunk": int(query.top_k_per_chunk),
        "vote_weight": float(query.vote_weight),
        "exclude_track_ids": [""],
        "max_query_seconds": float(query.max_query_seconds),
    }
    assert tuple(defaults) == PARAM_NAMES
    return defaults


def _weights_artifact(cfg: Config, staging: Path) -> tuple[Path, Config]:
    """The directory to log as the ``weights`` artifact, and the config the served model reads."""
    path = Path(cfg.embedder.weights_path).expanduser()
    if not path.exists():
        raise ConfigError(f"embedder.weights_path {path} does not exist; nothing to package with the model")
    if path.is_dir():
        return path, cfg
    # A single checkpoint file (LAION CLAP): stage it with the text-model folder beside it.
    # (MLflow refuses symlinks that resolve outside the logged folder: link the file, else copy it.)
    import shutil

    staging.mkdir(parents=True)
    try:
        os.link(path, staging / path.name)
    except OSError:
        shutil.copy2(path, staging / path.name)
    options = dict(cfg.embedder.options)
    text_dir = path.parent / options.get("text_model_dir", "roberta-base")
    if text_dir.is_dir():
        shutil.copytree(text_dir, staging / text_dir.name)
    options["checkpoint"] = path.name
    return staging, dataclasses.replace(cfg, embedder=dataclasses.replace(cfg.embedder, options=options))


def _siamese_base(cfg: Config) -> str | None:
    spec = Path(cfg.embedder.weights_path or "") / "siamese.json"
    try:
        return json.loads(spec.read_text()).get("base_embedder", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None


def _laion_clap_package() -> str | None:
    """The installed ``laion_clap`` package directory (shipped as code: it installs only with --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(list(spec.submodule_search_locations)[0]))


#: What laion-clap's model code imports; laion-clap itself travels as code (see log_search_model).
LAION_CLAP_REQUIREMENTS = ("torchvision", "torchlibrosa", "librosa", "h5py", "ftfy")


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """The pinned requirements logged with both pyfunc models: the versions installed here."""
    from importlib.metadata import version

    names = ["numpy", "scipy", "pandas", "pyarrow", "soundfile", "soxr", "pyyaml", "torch", "transformers",
             "faiss-cpu", "pydub", "mlflow", *extra]
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except Exception:  # noqa: BLE001 - a package not installed here is left unpinned
            out.append(name)
    return out
