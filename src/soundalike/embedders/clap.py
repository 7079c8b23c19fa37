"""The ``clap`` embedder: LAION CLAP's audio tower for clips, its text tower for text queries.

CLAP maps 10 s of 48 kHz mono audio and a sentence into one joint space, so the same index
answers "sounds like this file" and "calm solo piano". Clips are embedded non-fusion: fusion
mode crops random pieces of its input (LAION-AI/CLAP issues #90, #166), so a clip would get a
different vector each time. Here every clip is exactly 10 s (:func:`make_clap_embedder` refuses
any other ``clips.clip_s``), nothing is cropped or padded, and a clip's vector is the same
batched or alone, on every run.

Checkpoint forms (``embedder.options.format``; ``auto`` decides from ``embedder.weights_path``)
------------------------------------------------------------------------------------------------
``laion``
    An original LAION ``.pt`` checkpoint (``weights_path`` is the file, or the directory holding
    ``options.checkpoint``, default ``music_audioset_epoch_15_esc_90.14.pt``, audio model
    ``options.amodel``, default ``HTSAT-base``), built with the ``laion-clap`` package's model
    code. Its text branch is RoBERTa, which laion-clap fetches with
    ``from_pretrained('roberta-base')``; here it is built from the locally stored
    ``<dir>/roberta-base/config.json`` (``options.text_model_dir``) and then takes its weights from
    the checkpoint. Text queries also need that directory's tokenizer (``vocab.json`` and
    ``merges.txt``, or ``tokenizer.json``).
``transformers``
    A transformers CLAP directory (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``; tokenizer files for text queries), e.g. a local copy of
    ``laion/clap-htsat-unfused``. The audio tower loads as ``ClapAudioModelWithProjection``, the
    text tower (only when a text query comes) as ``ClapTextModelWithProjection``. The log-mel
    input is what ``ClapFeatureExtractor(truncation="rand_trunc")`` computes for an exactly-10 s
    clip (its filter bank and settings, read from ``preprocessor_config.json``), but computed in
    torch on the model's device, batched (the extractor's numpy loop costs more than the model on
    a GPU).

Nothing is ever downloaded: files come from ``weights_path`` (a UC Volume on Databricks) and
every transformers load is ``local_files_only``. The SHA-256 of the weight and config files is
part of :attr:`ClapEmbedder.version`, so vectors of different checkpoints never share an index.
On CUDA the model runs under bf16 autocast (fp16 where bf16 is missing) in ``inference_mode``;
the spectrogram front end stays float32. Precision and device are not part of the version:
their effect on a vector is rounding noise.

The helpers in the last section (devices, autocast, checksums, missing-weights messages,
transformers loading) are shared with :mod:`soundalike.embedders.wav2vec2`.

Examples
--------
>>> cfg = EmbedderConfig(name="clap", weights_path="/Volumes/main/soundalike/weights/clap")  # doctest: +SKIP
>>> emb = create_embedder(cfg, clip_s=10.0)  # doctest: +SKIP
>>> emb.embed(clips).shape  # clips: float32 [n, 480000]  # doctest: +SKIP
(n, 512)
>>> emb.embed_text(["calm solo piano"]).shape  # doctest: +SKIP
(1, 512)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from soundalike.checksums import sha256_file
from soundalike.config import EmbedderConfig
from soundalike.embedders.base import Embedder, register_embedder
from soundalike.embedders.mel import _resolve_device  # one device rule for every embedder
from soundalike.errors import ConfigError, ModelWeightsError, ParameterError
from soundalike.features import stft_power

#: Bump whenever the code below changes the vectors; it is part of :attr:`ClapEmbedder.version`.
CLAP_REVISION = 1

LAION_CHECKPOINT = "music_audioset_epoch_15_esc_90.14.pt"
LAION_AMODEL = "HTSAT-base"
LAION_TEXT_DIR = "roberta-base"
LAION_SAMPLE_RATE_HZ = 48000
LAION_CLIP_S = 10.0
#: Token length laion-clap pads and truncates text to.
LAION_TEXT_TOKENS = 77
#: The text files laion-clap's RoBERTa branch needs (it fetches them as ``roberta-base``).
ROBERTA_CONFIG = "config.json"
ROBERTA_TOKENIZER_FILES = ("vocab.json", "merges.txt")

FORMATS = ("auto", "laion", "transformers")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_OPTION_KEYS = ("format", "checkpoint", "amodel", "text_model_dir", "precision")
_LAION_ONLY_OPTIONS = ("checkpoint", "amodel", "text_model_dir")

_WHERE = (
    "Copy them into one directory (on Databricks a Unity Catalog Volume, e.g. "
    "/Volumes/<catalog>/<schema>/weights/{name}) and set embedder.weights_path to it; "
    "weights are never downloaded at run time."
)
_LAION_HELP = (
    f"the LAION checkpoint {LAION_CHECKPOINT} (https://huggingface.co/lukewys/laion_clap) and, in a "
    f"{LAION_TEXT_DIR}/ folder beside it, config.json, vocab.json and merges.txt of "
    "https://huggingface.co/FacebookAI/roberta-base (no RoBERTa weights: the checkpoint holds them)"
)
_TRANSFORMERS_HELP = (
    "a transformers CLAP directory with config.json, model.safetensors and preprocessor_config.json "
    "(plus tokenizer.json or vocab.json + merges.txt for text queries), e.g. "
    "https://huggingface.co/laion/clap-htsat-unfused"
)


@dataclass(frozen=True)
class ClapOptions:
    """``embedder.options`` of ``clap``, validated.

    Attributes
    ----------
    format : str
        ``auto``, ``laion`` or ``transformers``.
    checkpoint : str
        LAION checkpoint file name inside ``weights_path`` (when that is a directory).
    amodel : str
        LAION audio model config (``HTSAT-base`` for the music checkpoints, ``HTSAT-tiny``, ...).
    text_model_dir : str
        Folder with RoBERTa's config and tokenizer, relative to the checkpoint's directory.
    precision : str
        ``auto`` (bf16 autocast on CUDA where supported, else fp16; fp32 on CPU), ``fp32``,
        ``bf16`` or ``fp16`` (the last two only matter on CUDA).
    """

    format: str = "auto"
    checkpoint: str = LAION_CHECKPOINT
    amodel: str = LAION_AMODEL
    text_model_dir: str = LAION_TEXT_DIR
    precision: str = "auto"

    @classmethod
    def parse(cls, options: dict | None) -> "ClapOptions":
        options = dict(options or {})
        unknown = sorted(set(options) - set(_OPTION_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown embedder.options for clap: {', '.join(unknown)}; known: {', '.join(_OPTION_KEYS)}"
            )
        for key, value in options.items():
            if not isinstance(value, str) or not value:
                raise ConfigError(f"embedder.options.{key} must be a non-empty string, got {value!r}")
        parsed = cls(**options)
        if parsed.format not in FORMATS:
            raise ConfigError(f"embedder.options.format must be one of {', '.join(FORMATS)}, got {parsed.format!r}")
        check_precision(parsed.precision)
        return parsed


class ClapEmbedder(Embedder):
    """CLAP audio embeddings of exactly-``clip_s`` clips at ``sample_rate_hz``, and text embeddings.

    Built by :func:`make_clap_embedder` (``create_embedder``); see the module docstring.

    Attributes
    ----------
    format : str
        ``laion`` or ``transformers``.
    weights_path : Path
        The checkpoint file (laion) or directory (transformers).
    weights_sha256 : dict[str, str]
        SHA-256 of each file the vectors depend on, by name relative to the weights directory.
    """

    name = "clap"

    def __init__(self, backend: "_LaionClap | _TransformersClap", *, device: torch.device, precision: str,
                 batch_size: int, fmt: str):
        self._backend = backend
        self.format = fmt
        self.device = device
        self.autocast_dtype = autocast_dtype(device, precision)
        self.batch_size = batch_size
        self.sample_rate_hz = backend.sample_rate_hz
        self.clip_s = backend.clip_s
        self.dim = backend.dim
        self.weights_path = backend.weights_path
        self.weights_sha256 = backend.weights_sha256
        self.version = model_version(
            CLAP_REVISION, backend.main_weights, self.weights_sha256,
            {"format": fmt, "sample_rate_hz": self.sample_rate_hz, "clip_s": self.clip_s, **backend.params},
        )

    def _embed(self, clips: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, clips.shape[0], self.batch_size):
            x = batch_to_device(clips[start : start + self.batch_size], self.device)
            with inference(self.device, self.autocast_dtype):
                out.append(self._backend.embed_audio(x).float().cpu())
        return torch.cat(out).numpy()

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors [n, dim] of ``texts`` in the audio vectors' space.

        Raises
        ------
        ModelWeightsError
            The checkpoint has no text tower or its tokenizer files are missing.
        ParameterError
            ``texts`` is not a non-empty list of non-empty strings.
        """
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ParameterError(f"texts must be a non-empty list of non-empty strings, got {texts!r}"[:200])
        out = []
        for start in range(0, len(texts), self.batch_size):
            with inference(self.device, self.autocast_dtype):
                out.append(self._backend.embed_text(list(texts[start : start + self.batch_size])).float().cpu())
        vectors = torch.cat(out).numpy()
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@register_embedder("clap")
def make_clap_embedder(config: EmbedderConfig, clip_s: float) -> ClapEmbedder:
    """Registry factory: :class:`ClapEmbedder` from ``config.weights_path`` and ``config.options``.

    Raises
    ------
    ModelWeightsError
        Weights or text-model files missing, unreadable, or not matching the architecture.
    ConfigError
        Bad options, an unusable device, or ``clip_s`` other than the checkpoint's 10 s.
    """
    options = ClapOptions.parse(config.options)
    check_batch_size(config.batch_size)
    device = _resolve_device(config.device)
    fmt, path = _locate_clap(config.weights_path, options)
    if fmt == "laion":
        backend = _LaionClap(path, options, device, clip_s=clip_s)
    else:
        given = sorted(k for k in _LAION_ONLY_OPTIONS if k in (config.options or {}))
        if given:
            raise ConfigError(f"embedder.options {', '.join(given)} only apply to LAION checkpoints, not to {path}")
        backend = _TransformersClap(path, device, clip_s=clip_s)
    return ClapEmbedder(backend, device=device, precision=options.precision, batch_size=config.batch_size, fmt=fmt)


def _locate_clap(weights_path: str | None, options: ClapOptions) -> tuple[str, Path]:
    """``(format, path)``: the checkpoint file (laion) or model directory (transformers)."""
    wanted = {"laion": _LAION_HELP, "transformers": _TRANSFORMERS_HELP}.get(
        options.format, f"either {_LAION_HELP}; or {_TRANSFORMERS_HELP}"
    )
    where = where_to_put("clap")
    if not weights_path:
        raise ModelWeightsError(f"CLAP weights: embedder.weights_path is not set. The clap embedder needs {wanted}. {where}")
    path = Path(weights_path).expanduser()
    if not path.exists():
        raise ModelWeightsError(f"CLAP weights not found at {path}. The clap embedder needs {wanted}. {where}")
    fmt = options.format
    if fmt == "auto":
        if path.is_file():
            fmt = "laion"
        elif _hf_model_type(path).startswith("clap"):
            fmt = "transformers"
        elif (path / options.checkpoint).is_file():
            fmt = "laion"
        else:
            raise ModelWeightsError(
                f"no CLAP checkpoint in {path}: found neither {options.checkpoint} nor a transformers CLAP "
                f"config.json. The clap embedder needs {wanted}. {where}"
            )
    if fmt == "laion":
        checkpoint = path if path.is_file() else path / options.checkpoint
        if not checkpoint.is_file():
            raise ModelWeightsError(f"CLAP checkpoint not found: {checkpoint}. The clap embedder needs {wanted}. {where}")
        return fmt, checkpoint
    if not path.is_dir():
        raise ModelWeightsError(f"{path} is a file; a transformers CLAP checkpoint is a directory: {_TRANSFORMERS_HELP}")
    return fmt, path


def _check_clip_s(clip_s: float, expected: float) -> None:
    if isinstance(clip_s, bool) or not isinstance(clip_s, (int, float)) or abs(float(clip_s) - expected) > 1e-9:
        raise ConfigError(
            f"the clap embedder embeds exactly {expected:g} s clips (what the checkpoint was trained on), "
            f"but clips.clip_s is {clip_s!r}; set clips.clip_s={expected:g}"
        )


# --------------------------------------------------------------------------- LAION checkpoints


class _LaionClap:
    """A LAION ``.pt`` checkpoint on laion-clap's own model code (non-fusion)."""

    sample_rate_hz = LAION_SAMPLE_RATE_HZ
    clip_s = LAION_CLIP_S

    def __init__(self, checkpoint: Path, options: ClapOptions, device: torch.device, *, clip_s: float):
        _check_clip_s(clip_s, self.clip_s)
        text_dir = checkpoint.parent / options.text_model_dir
        require_files(
            text_dir, (ROBERTA_CONFIG,), what="CLAP text-model config",
            needs=f"config.json of https://huggingface.co/FacebookAI/roberta-base in {text_dir} (laion-clap builds "
                  "its text branch from it; with vocab.json and merges.txt beside it, text queries work too)",
            name="clap",
        )
        from transformers import RobertaConfig

        self.weights_path = checkpoint
        self.text_dir = text_dir
        self.amodel = options.amodel
        model = build_laion_model(options.amodel, RobertaConfig.from_pretrained(str(text_dir), local_files_only=True))
        state = read_laion_state_dict(checkpoint)
        expected = model.state_dict()
        # Newer transformers keep these buffers out of the state dict; old checkpoints carry them.
        state = {k: v for k, v in state.items() if k in expected or not k.endswith(("position_ids", "token_type_ids"))}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or mismatched:
            raise ModelWeightsError(
                f"{checkpoint} does not fit the non-fusion LAION CLAP {options.amodel} + RoBERTa "
                f"({text_dir / ROBERTA_CONFIG}): {len(missing)} missing, {len(unexpected)} unexpected, "
                f"{len(mismatched)} mis-shaped tensors (e.g. {(missing + unexpected + mismatched)[:3]}). "
                "Set embedder.options.amodel to the checkpoint's audio model (HTSAT-base for the music "
                "checkpoints, HTSAT-tiny for 630k-*); fusion checkpoints are not supported"
            )
        model.load_state_dict(state)
        branch = model.audio_branch
        # The spectrogram front end (STFT as a convolution) stays float32 under autocast.
        branch.spectrogram_extractor = _Float32(branch.spectrogram_extractor)
        branch.logmel_extractor = _Float32(branch.logmel_extractor)
        self.model = model.to(device).eval()
        self.device = device
        self.dim = int(model.joint_embed_shape)
        self.weights_sha256 = {
            checkpoint.name: file_sha256(checkpoint),
            f"{options.text_model_dir}/{ROBERTA_CONFIG}": file_sha256(text_dir / ROBERTA_CONFIG),
        }
        self.main_weights = self.weights_sha256[checkpoint.name]
        self.params = {"amodel": options.amodel, "quantise": "int16"}
        self._tokenizer = None

    def embed_audio(self, x: torch.Tensor) -> torch.Tensor:
        # laion-clap quantises every waveform to int16 before embedding it (get_audio_embedding_from_data).
        x = torch.clamp(x, -1.0, 1.0).mul(32767.0).to(torch.int16).to(torch.float32).div(32767.0)
        longer = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        out = self.model.audio_branch({"waveform": x, "longer": longer}, mixup_lambda=None, device=x.device)
        return self.model.audio_projection(out["embedding"])

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.text_dir, what="CLAP text queries (LAION checkpoint)")
        tokens = self._tokenizer(texts, padding="max_length", truncation=True, max_length=LAION_TEXT_TOKENS,
                                 return_tensors="pt")
        batch = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        return self.model.encode_text(batch, device=self.device)


class _Float32(torch.nn.Module):
    """Runs ``inner`` in float32 with autocast off (for the STFT/mel front end)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.inner(x.float())


def laion_clap_module():
    """laion-clap's model code (the ``clap_module`` package inside ``laion_clap``).

    Imported on its own, without running ``laion_clap/__init__.py``: that imports
    ``laion_clap.training.data``, which calls ``from_pretrained`` for the BERT, RoBERTa and BART
    tokenizers at import time, so ``import laion_clap`` fails offline (after minutes of retries).
    The model code needs none of it. ``clap_module`` is the name laion-clap itself imports it by.

    Raises
    ------
    ConfigError
        laion-clap, or a package its model code imports, is not installed.
    """
    loaded = sys.modules.get("clap_module")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "LAION CLAP checkpoints need the laion-clap package: pip install --no-deps laion-clap==1.1.7 "
            "(scripts/bootstrap.sh installs it with the packages its model code imports)"
        )
    package = Path(list(spec.submodule_search_locations)[0]) / "clap_module"
    module_spec = importlib.util.spec_from_file_location(
        "clap_module", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["clap_module"] = module
    try:
        module_spec.loader.exec_module(module)
    except ImportError as exc:
        for name in [n for n in sys.modules if n == "clap_module" or n.startswith("clap_module.")]:
            del sys.modules[name]
        raise ConfigError(
            f"laion-clap's model code cannot be imported ({exc}); install the packages in requirements.lock "
            "(scripts/bootstrap.sh)"
        ) from None
    return module


def build_laion_model(amodel: str, text_config) -> torch.nn.Module:
    """A randomly initialised non-fusion LAION ``CLAP`` (audio model ``amodel``, RoBERTa text branch).

    laion-clap creates its text branch with ``RobertaModel.from_pretrained('roberta-base')``; here
    that one call builds ``RobertaModel(text_config)`` instead (random weights: a checkpoint's
    state dict overwrites them), so nothing is fetched. Tests and benchmarks save these models
    as checkpoints.

    Parameters
    ----------
    amodel : str
        A laion-clap audio model config name (``HTSAT-base``, ``HTSAT-tiny``, ...).
    text_config : transformers.RobertaConfig
        Hidden size 768 (laion-clap's text projection expects it).
    """
    from transformers import RobertaModel

    clap_module = laion_clap_module()
    if amodel not in clap_module.list_models():
        raise ConfigError(
            f"embedder.options.amodel {amodel!r} is not a laion-clap audio model; "
            f"known: {', '.join(m for m in clap_module.list_models() if m.startswith(('HTSAT', 'PANN')))}"
        )

    class _LocalRoberta:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return RobertaModel(text_config)

    model_code = sys.modules["clap_module.model"]
    original = model_code.RobertaModel
    model_code.RobertaModel = _LocalRoberta
    try:
        model, _ = clap_module.create_model(amodel, "roberta", precision="fp32", device=torch.device("cpu"),
                                            enable_fusion=False)
    finally:
        model_code.RobertaModel = original
    return model.eval()


def read_laion_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The model state dict of a LAION ``.pt`` checkpoint, read with ``weights_only=True``."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelWeightsError(
            f"cannot read the LAION CLAP checkpoint {path}: {first[:300]} (it must be a torch checkpoint that "
            "loads with weights_only=True, as the published LAION .pt files do)"
        ) from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelWeightsError(f"{path} holds no CLAP state dict (expected a dict with a 'state_dict' of tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


# --------------------------------------------------------------------------- transformers directories


class _TransformersClap:
    """A transformers CLAP directory: ``ClapAudioModelWithProjection`` + the extractor's log-mel."""

    def __init__(self, directory: Path, device: torch.device, *, clip_s: float):
        from transformers import ClapAudioModelWithProjection, ClapFeatureExtractor

        weights = hf_weight_files(directory)
        require_files(
            directory, ("config.json", "preprocessor_config.json") + (() if weights else ("model.safetensors",)),
            what="CLAP weights (transformers format)", needs=_TRANSFORMERS_HELP, name="clap",
        )
        try:
            extractor = ClapFeatureExtractor.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelWeightsError(f"cannot read {directory / 'preprocessor_config.json'}: {exc}") from None
        _check_clip_s(clip_s, float(extractor.max_length_s))
        model = load_hf_model(ClapAudioModelWithProjection, directory, what="CLAP audio tower", model_type="clap")
        if getattr(model.config, "enable_fusion", False):
            raise ModelWeightsError(
                f"{directory} is a fusion CLAP checkpoint; fusion crops its input at random, so vectors would "
                "change from run to run. Use an unfused checkpoint (e.g. laion/clap-htsat-unfused)"
            )
        self.weights_path = directory
        self.directory = directory
        self.device = device
        self.model = model.to(device)
        self.sample_rate_hz = int(extractor.sampling_rate)
        self.clip_s = float(extractor.max_length_s)
        self.n_fft = int(extractor.fft_window_size)
        self.hop_length = int(extractor.hop_length)
        self.top_db = extractor.top_db
        # The bank ClapFeatureExtractor uses without fusion (truncation="rand_trunc"): [bins, n_mels].
        self.mel_filters = torch.from_numpy(np.asarray(extractor.mel_filters_slaney, dtype=np.float32)).to(device)
        self.dim = int(model.config.projection_dim)
        self.weights_sha256 = {
            name: file_sha256(directory / name) for name in ["config.json", "preprocessor_config.json"] + weights
        }
        self.main_weights = weights_digest({n: self.weights_sha256[n] for n in weights})
        self.params = {"features": "slaney log-mel (ClapFeatureExtractor rand_trunc)"}
        self._text = None

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """``input_features`` [b, 1, frames, n_mels] of clips ``x`` [b, clip_samples], float32."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            power = stft_power(x.float(), n_fft=self.n_fft, hop_length=self.hop_length)  # [b, frames, bins]
            mel = torch.clamp(power @ self.mel_filters, min=1e-10)
            db = 10.0 * torch.log10(mel)
            if self.top_db is not None:
                db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - float(self.top_db))
        return db[:, None]

    def embed_audio(self, x: torch.Tensor) -> torch.Tensor:
        features = self.log_mel(x)
        longer = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)
        return self.model(input_features=features, is_longer=longer).audio_embeds

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        if self._text is None:
            from transformers import ClapTextModelWithProjection

            tokenizer = load_tokenizer(self.directory, what="CLAP text queries")
            model = load_hf_model(ClapTextModelWithProjection, self.directory, what="CLAP text tower",
                                   model_type="clap")
            self._text = (tokenizer, model.to(self.device))
        tokenizer, model = self._text
        # RoBERTa-style positions start after the padding index: two fewer tokens than positions.
        limit = min(int(tokenizer.model_max_length), int(model.config.max_position_embeddings) - 2)
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return model(input_ids=tokens["input_ids"].to(self.device),
                     attention_mask=tokens["attention_mask"].to(self.device)).text_embeds


# --------------------------------------------------------------------------- shared by the learned embedders


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"embedder.options.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"embedder.batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain float32 (always on CPU)."""
    check_precision(precision)
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


@contextlib.contextmanager
def inference(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.inference_mode``, plus autocast to ``dtype`` when one is given (CUDA)."""
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


def batch_to_device(clips: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 tensor of ``clips`` on ``device``; via pinned memory and an async copy on CUDA."""
    x = torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32))
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so each process hashes a checkpoint once."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]


def weights_digest(sha256_by_name: dict[str, str]) -> str:
    """One SHA-256 for several files: the file's own for a single one, else over the sorted pairs."""
    if len(sha256_by_name) == 1:
        return next(iter(sha256_by_name.values()))
    return hashlib.sha256(json.dumps(sorted(sha256_by_name.items())).encode()).hexdigest()


def model_version(revision: int, weights_sha256: str, files_sha256: dict[str, str], params: dict) -> str:
    """``"<revision>-<12 hex of the weights' SHA-256>-<8 hex over all files and params>"``."""
    payload = json.dumps({"revision": revision, "files": sorted(files_sha256.items()), "params": params},
                         sort_keys=True, default=str)
    return f"{revision}-{weights_sha256[:12]}-{hashlib.sha256(payload.encode()).hexdigest()[:8]}"


def where_to_put(name: str) -> str:
    """The sentence every missing-weights message ends with: where the files go."""
    return _WHERE.format(name=name)


def require_files(directory: Path, names: Sequence[str], *, what: str, needs: str, name: str) -> None:
    """Raise :class:`ModelWeightsError` naming the files of ``names`` missing from ``directory``."""
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise ModelWeightsError(
            f"{what} not found: {', '.join(missing)} missing in {directory}. Needed: {needs}. "
            + where_to_put(name)
        )


def hf_weight_files(directory: Path) -> list[str]:
    """Names of the transformers weight files in ``directory`` (safetensors preferred)."""
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        found = sorted(p.name for p in directory.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def _hf_model_type(directory: Path) -> str:
    try:
        return str(json.loads((directory / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _hf_load_errors() -> tuple[type[BaseException], ...]:
    """What ``from_pretrained`` raises for unreadable or mismatched files (not for bugs).

    ``OSError``: a missing or unreadable file; ``ValueError``/``KeyError``: a config.json that is
    not JSON or lacks a field; ``RuntimeError``: torch's zip reader on a damaged ``.bin``, or a
    tensor of the wrong shape; ``SafetensorError``: a truncated or empty ``.safetensors``;
    ``UnpicklingError``/``EOFError``: a ``.bin`` that is not (or no longer) a torch checkpoint;
    ``StrictDataclassError``: a config.json of another architecture (huggingface_hub validates
    config fields by type).
    """
    import pickle

    import huggingface_hub.errors
    from safetensors import SafetensorError

    errors = (OSError, ValueError, RuntimeError, KeyError, SafetensorError, pickle.UnpicklingError, EOFError)
    # Only in recent huggingface_hub releases: this handler must not itself fail on older ones.
    strict = getattr(huggingface_hub.errors, "StrictDataclassError", None)
    return errors + ((strict,) if isinstance(strict, type) else ())


def load_hf_model(cls, directory: Path, *, what: str, ignore_missing: Sequence[str] = (),
                  model_type: str | None = None):
    """``cls.from_pretrained(directory)`` from local files only, in eval mode.

    A tower loaded from a whole-model checkpoint sees the other tower's tensors as unexpected
    (that is fine); a tensor the model needs but the files lack is an error here, where
    transformers would silently initialise it at random. ``model_type``, when given, is what
    ``config.json`` must say (a checkpoint of another architecture is refused by name).

    Raises
    ------
    ModelWeightsError
        Unreadable, truncated or mismatched files, naming the directory and its weight files.
    """
    import pickle

    from transformers.utils import logging as hf_logging

    found = _hf_model_type(directory)
    # A tower saved alone says e.g. "clap_audio_model": the same architecture (as _locate_clap accepts).
    if model_type is not None and found and found != model_type and not found.startswith(model_type + "_"):
        raise ModelWeightsError(
            f"{directory / 'config.json'} is a {found!r} model, not {model_type!r}: {directory} holds no {what}; "
            "point embedder.weights_path at the right model directory"
        )

    # transformers logs a per-tensor load report (checked below instead) and draws a progress bar:
    # noise in every Spark worker's log. Both are turned down for this call only.
    library_logger = logging.getLogger("transformers")
    level, bars = library_logger.level, hf_logging.is_progress_bar_enabled()
    library_logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(str(directory), local_files_only=True, output_loading_info=True)
    except _hf_load_errors() as exc:
        if isinstance(exc, pickle.UnpicklingError):  # torch's first line advises weights_only=False: never
            first = "not a torch checkpoint that loads with weights_only=True"
        else:
            first = (str(exc).strip().splitlines() or [""])[0] or "the file ends early"
        files = ", ".join(["config.json"] + hf_weight_files(directory))
        raise ModelWeightsError(
            f"cannot load the {what} from {directory} ({files}): {type(exc).__name__}: {first[:300]}; "
            "the files are damaged or of another model: copy the whole model directory again"
        ) from None
    finally:
        library_logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
    missing = sorted(k for k in info.get("missing_keys", ()) if not any(k.endswith(s) for s in ignore_missing))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise ModelWeightsError(
            f"the {what} in {directory} is incomplete: {len(missing)} missing and {len(mismatched)} mis-shaped "
            f"tensors (e.g. {(missing + [str(m[0]) for m in mismatched])[:3]}); copy the whole model directory"
        )
    return model.eval()


def load_tokenizer(directory: Path, *, what: str):
    """The tokenizer stored in ``directory`` (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``)."""
    from transformers import AutoTokenizer

    has_fast = (directory / "tokenizer.json").is_file()
    if not has_fast:
        require_files(
            directory, ROBERTA_TOKENIZER_FILES, what=f"tokenizer files for {what}",
            needs="tokenizer.json, or vocab.json and merges.txt, of the checkpoint's text model "
                  "(RoBERTa: https://huggingface.co/FacebookAI/roberta-base)",
            name="clap",
        )
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelWeightsError(f"cannot load the tokenizer for {what} from {directory}: {first[:300]}") from None
