"""The ``wav2vec2`` embedder: mean-pooled hidden states of one Wav2Vec2 transformer layer.

A transformers ``Wav2Vec2Model`` from a local directory (``embedder.weights_path``:
``config.json``, ``model.safetensors`` or ``pytorch_model.bin``, and optionally
``preprocessor_config.json``; e.g. a copy of ``facebook/wav2vec2-base``) embeds clips decoded at
its extractor's rate (16 kHz). Each clip is normalised to zero mean and unit variance (as
``Wav2Vec2FeatureExtractor(do_normalize=True)`` does), run through the convolutional feature
encoder and the first ``layer`` transformer layers, and the output of layer ``layer`` is averaged
over time: a ``hidden_size`` vector (768 for base models). Middle layers carry more about the
music (timbre, harmony) than the last, which is tuned to the pre-training task; the default is
the middle one (``num_hidden_layers // 2``). Layers above ``layer`` are dropped after loading,
so they cost nothing.

Options (``embedder.options``): ``layer`` (1 .. num_hidden_layers), ``precision`` (``auto``,
``fp32``, ``bf16``, ``fp16``; see :mod:`soundalike.embedders.clap`). The version covers the
code revision, the layer, the extractor settings and the SHA-256 of the weight and config files.

Examples
--------
>>> cfg = EmbedderConfig(name="wav2vec2", weights_path="/Volumes/main/soundalike/weights/wav2vec2-base",
...                      options={"layer": 6})  # doctest: +SKIP
>>> create_embedder(cfg, clip_s=10.0).embed(clips).shape  # clips: float32 [n, 160000]  # doctest: +SKIP
(n, 768)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soundalike.config import EmbedderConfig
from soundalike.embedders.base import Embedder, register_embedder
from soundalike.embedders.clap import (
    autocast_dtype,
    batch_to_device,
    check_batch_size,
    check_precision,
    file_sha256,
    hf_weight_files,
    inference,
    load_hf_model,
    model_version,
    require_files,
    weights_digest,
    where_to_put,
)
from soundalike.embedders.mel import _resolve_device
from soundalike.errors import ConfigError, ModelWeightsError, ParameterError

#: Bump whenever the code below changes the vectors; it is part of :attr:`Wav2Vec2Embedder.version`.
WAV2VEC2_REVISION = 1

_OPTION_KEYS = ("layer", "precision")
_NEEDS = (
    "a transformers Wav2Vec2 directory with config.json and model.safetensors (or pytorch_model.bin), "
    "plus preprocessor_config.json if the model has one, e.g. https://huggingface.co/facebook/wav2vec2-base"
)
#: Variance floor of the per-clip normalisation (Wav2Vec2FeatureExtractor's).
_NORM_EPS = 1e-7


class Wav2Vec2Embedder(Embedder):
    """Mean over time of Wav2Vec2 layer ``layer``'s output, for clips of ``clip_s`` at ``sample_rate_hz``.

    Attributes
    ----------
    layer : int
        Transformer layer whose output is pooled (1-based; ``hidden_states[layer]`` in transformers).
    weights_path : Path
    weights_sha256 : dict[str, str]
        SHA-256 of each weight and config file, by name.
    """

    name = "wav2vec2"

    def __init__(self, directory: Path, *, clip_s: float, layer: int | None = None, device: torch.device,
                 precision: str = "auto", batch_size: int = 32):
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        weights = hf_weight_files(directory)
        require_files(directory, ("config.json",) + (() if weights else ("model.safetensors",)),
                      what="Wav2Vec2 weights", needs=_NEEDS, name="wav2vec2")
        has_extractor = (directory / "preprocessor_config.json").is_file()
        try:
            extractor = (Wav2Vec2FeatureExtractor.from_pretrained(str(directory), local_files_only=True)
                         if has_extractor else Wav2Vec2FeatureExtractor())
        except (OSError, ValueError, TypeError) as exc:
            raise ModelWeightsError(f"cannot read {directory / 'preprocessor_config.json'}: {exc}") from None
        # masked_spec_embed only serves masking during pre-training; some checkpoints leave it out.
        model = load_hf_model(Wav2Vec2Model, directory, what="Wav2Vec2 model", ignore_missing=("masked_spec_embed",),
                             model_type="wav2vec2")
        n_layers = len(model.encoder.layers)
        layer = n_layers // 2 if layer is None else layer
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= n_layers:
            raise ConfigError(f"embedder.options.layer must be an integer in [1, {n_layers}] for {directory}, got {layer!r}")
        model.encoder.layers = model.encoder.layers[:layer]  # nothing above the pooled layer runs
        self._pooled: list[torch.Tensor] = []
        model.encoder.layers[layer - 1].register_forward_hook(self._keep_output)
        self.model = model.to(device)
        self.device = device
        self.autocast_dtype = autocast_dtype(device, precision)
        self.batch_size = batch_size
        self.layer = layer
        self.normalize = bool(getattr(extractor, "do_normalize", True))
        self.sample_rate_hz = int(extractor.sampling_rate)
        self.clip_s = float(clip_s)
        self.dim = int(model.config.hidden_size)
        receptive = _receptive_field(model.config)
        if self.clip_samples < receptive:
            raise ConfigError(f"clips.clip_s={clip_s} is shorter than Wav2Vec2's receptive field "
                              f"({receptive} samples at {self.sample_rate_hz} Hz)")
        self.weights_path = directory
        names = ["config.json"] + (["preprocessor_config.json"] if has_extractor else []) + weights
        self.weights_sha256 = {n: file_sha256(directory / n) for n in names}
        self.version = model_version(
            WAV2VEC2_REVISION, weights_digest({n: self.weights_sha256[n] for n in weights}), self.weights_sha256,
            {"layer": layer, "normalize": self.normalize, "sample_rate_hz": self.sample_rate_hz,
             "clip_s": self.clip_s, "pool": "mean"},
        )

    def _keep_output(self, module, inputs, output) -> None:
        self._pooled.append(output[0] if isinstance(output, tuple) else output)

    def _embed(self, clips: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, clips.shape[0], self.batch_size):
            x = batch_to_device(clips[start : start + self.batch_size], self.device)
            with inference(self.device, self.autocast_dtype):
                if self.normalize:
                    mean = x.mean(dim=1, keepdim=True)
                    var = x.var(dim=1, unbiased=False, keepdim=True)
                    x = (x - mean) / torch.sqrt(var + _NORM_EPS)
                self._pooled.clear()
                self.model(x)
                hidden = self._pooled.pop()  # [b, frames, hidden]
                out.append(hidden.float().mean(dim=1).cpu())
        return torch.cat(out).numpy()


@register_embedder("wav2vec2")
def make_wav2vec2_embedder(config: EmbedderConfig, clip_s: float) -> Wav2Vec2Embedder:
    """Registry factory: :class:`Wav2Vec2Embedder` from ``config.weights_path`` and ``config.options``.

    Raises
    ------
    ModelWeightsError
        The weights directory or its files are missing or unreadable.
    ConfigError
        Unknown options, a layer out of range, an unusable device.
    """
    options = dict(config.options or {})
    unknown = sorted(set(options) - set(_OPTION_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown embedder.options for wav2vec2: {', '.join(unknown)}; known: {', '.join(_OPTION_KEYS)}"
        )
    precision = check_precision(options.get("precision", "auto"))
    check_batch_size(config.batch_size)
    if not isinstance(clip_s, (int, float)) or isinstance(clip_s, bool) or not clip_s > 0:
        raise ParameterError(f"clip_s must be a positive number of seconds, got {clip_s!r}")
    device = _resolve_device(config.device)
    if not config.weights_path:
        raise ModelWeightsError(f"Wav2Vec2 weights: embedder.weights_path is not set. Needed: {_NEEDS}. {where_to_put('wav2vec2')}")
    directory = Path(config.weights_path).expanduser()
    if not directory.is_dir():
        raise ModelWeightsError(f"Wav2Vec2 weights not found: {directory} is not a directory. Needed: {_NEEDS}. {where_to_put('wav2vec2')}")
    return Wav2Vec2Embedder(directory, clip_s=float(clip_s), layer=options.get("layer"), device=device,
                            precision=precision, batch_size=config.batch_size)


def _receptive_field(config) -> int:
    """Samples the convolutional feature encoder needs for one output frame."""
    field = 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        field = (field - 1) * stride + kernel
    return field
