"""The trained ``siamese`` embedder as an MLflow model (``soundalike_siamese``), for the registry.

Unity Catalog registers only MLflow models with a signature, so ``soundalike train`` logs the
branch it trained as this pyfunc: the branch directory (``siamese.json``, ``siamese.safetensors``,
``training.json``) is the model's ``weights`` artifact, the configuration its ``config`` artifact,
and this package its code. ``predict`` embeds audio files the way the catalogue is embedded (the
same :func:`~soundalike.extract.extract_track`): one row per file (``audio_b64``), answering
``{"embedder", "start_s", "vectors"}``; a file longer than the config's ``query.max_query_seconds``
is refused (by its header), not cut. To embed a catalogue with a registered version, download
its weights and point ``embedder.weights_path`` at them::

    mlflow artifacts download -u models:/main.soundalike.soundalike_siamese/1 -d /tmp/m
    # embedder.name=siamese embedder.weights_path=/tmp/m/artifacts/siamese   (the branch folder)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from soundalike.config import Config, config_from_dict, config_to_dict
from soundalike.errors import SoundalikeError
from soundalike.mlflow_model import bad_request, pip_requirements

try:
    import mlflow
except ImportError:  # pragma: no cover
    mlflow = None

#: Files per request, as for the search model.
MAX_ROWS = 16


class SoundalikeEmbedderModel(mlflow.pyfunc.PythonModel if mlflow else object):
    """Clip vectors of audio files with a saved embedder branch, as an MLflow pyfunc."""

    def load_context(self, context) -> None:
        import torch

        from soundalike.embedders import create_embedder

        cfg = config_from_dict(json.loads(Path(context.artifacts["config"]).read_text()))
        cfg = dataclasses.replace(cfg, embedder=dataclasses.replace(cfg.embedder, weights_path=context.artifacts["weights"]))
        if not torch.cuda.is_available():
            torch.set_num_threads(1)
        self.cfg: Config = cfg
        self.embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[dict]:
        from soundalike.extract import extract_track
        from soundalike.search import check_query_length

        if not isinstance(model_input, pd.DataFrame) or list(model_input.columns) != ["audio_b64"]:
            raise bad_request("input must be a table with one column, audio_b64 (base64 audio file bytes)")
        if not 0 < len(model_input) <= MAX_ROWS:
            raise bad_request(f"give 1 to {MAX_ROWS} rows, got {len(model_input)}")
        out = []
        for i, value in enumerate(model_input["audio_b64"]):
            if not isinstance(value, str) or len(value) > self.cfg.query.max_query_bytes * 4 // 3 + 4:
                raise bad_request(f"row {i}: audio_b64 must be a base64 string of at most "
                                   f"query.max_query_bytes={self.cfg.query.max_query_bytes} bytes")
            try:
                data = base64.b64decode(value, validate=True)
                check_query_length(data, self.cfg.query.max_query_seconds)
                clips = extract_track(data, self.embedder, self.cfg.clips, batch_size=self.cfg.embedder.batch_size,
                                      max_seconds=self.cfg.query.max_query_seconds)
            except (binascii.Error, ValueError, SoundalikeError) as exc:
                raise bad_request(f"row {i}: {exc}") from None
            out.append({"embedder": self.embedder.key, "start_s": clips.start_s.tolist(),
                        "vectors": clips.vectors.tolist()})
        return out


def log_embedder_model(weights_dir: str | os.PathLike, cfg: Config, *, example_audio: bytes,
                       registered_model_name: str | None):
    """Log the branch in ``weights_dir`` as this pyfunc in the active run (and register it)."""
    from mlflow.models import infer_signature

    import soundalike

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config_to_dict(cfg), indent=2))
        example = pd.DataFrame({"audio_b64": [base64.b64encode(example_audio).decode()]})
        signature = infer_signature(example, [{"embedder": "siamese@x", "start_s": [0.0], "vectors": [[0.0]]}])
        return mlflow.pyfunc.log_model(
            name="embedder",
            python_model=str(Path(__file__).with_name("embedder_entry.py")),
            artifacts={"weights": str(weights_dir), "config": str(config_path)},
            code_paths=[str(Path(soundalike.__file__).parent)],
            signature=signature,
            registered_model_name=registered_model_name,
            pip_requirements=pip_requirements(),
        )
