"""The ``siamese`` embedder: one trained branch of the Siamese network of :mod:`soundalike.training`.

``embedder.weights_path`` is the directory ``soundalike train`` wrote (by default
``<workdir>/models/siamese``, or a copy of the registered model's artifacts, e.g. in a UC
Volume): ``siamese.json`` (what the branch is) and ``siamese.safetensors`` (its weights, read
without pickle). Two kinds:

- ``cnn``: clips decoded at the branch's rate (16 kHz by default) -> log-mel -> the CNN;
- ``head``: clips -> the frozen base embedder it was trained over (``mel``) -> the projection
  head; decoded at the base embedder's rate.

The version is ``"<revision>-<12 hex of the weights' SHA-256>-<8 hex over the spec, clip_s and
the base embedder's key>"``: new weights, another architecture or another base give other
vectors and so another ``embedder`` value in the tables. No options.

Examples
--------
>>> cfg = EmbedderConfig(name="siamese", weights_path="work/models/siamese")  # doctest: +SKIP
>>> create_embedder(cfg, clip_s=10.0).embed(clips).shape  # clips: float32 [n, 160000]  # doctest: +SKIP
(n, 128)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from soundalike.checksums import sha256_file
from soundalike.config import EmbedderConfig
from soundalike.embedders.base import Embedder, create_embedder, register_embedder
from soundalike.embedders.mel import _resolve_device
from soundalike.errors import ConfigError, ModelWeightsError, ParameterError

#: Bump whenever the code below changes the vectors for the same saved branch.
SIAMESE_REVISION = 1


class SiameseEmbedder(Embedder):
    """A saved Siamese branch as an embedder.

    Parameters
    ----------
    directory : Path
        Holds ``siamese.json`` and ``siamese.safetensors``.
    clip_s : float
        Clip length, seconds.
    device : torch.device

    Attributes
    ----------
    kind : str
        ``"cnn"`` or ``"head"``.
    weights_sha256 : str
        SHA-256 of ``siamese.safetensors``.
    base : Embedder or None
        The frozen embedder under a head.

    Raises
    ------
    ModelWeightsError
        Missing, unreadable or inconsistent model files.
    ParameterError
        Clips too short for the branch's spectrogram.
    """

    name = "siamese"

    def __init__(self, directory: Path, *, clip_s: float, device: torch.device):
        from soundalike.training.model import WEIGHTS_FILE, FrontendParams, SpectrogramFrontend, load_branch

        self.branch, self.spec = load_branch(directory, device=device)
        self.weights_path = directory
        self.weights_sha256 = sha256_file(directory / WEIGHTS_FILE)
        self.device = device
        self.kind = str(self.spec["kind"])
        self.clip_s = float(clip_s)
        self.base: Embedder | None = None
        self.frontend = None
        if self.kind == "cnn":
            try:
                params = FrontendParams(**self.spec["frontend"])
            except (KeyError, TypeError) as exc:
                raise ModelWeightsError(f"{directory / 'siamese.json'} has a malformed frontend: {exc!r}") from None
            self.frontend = SpectrogramFrontend(params)
            self.sample_rate_hz = params.sample_rate_hz
            self.dim = int(self.spec["cnn"]["dim"])
            if self.clip_samples < params.n_fft:
                raise ParameterError(f"clip_s ({clip_s} s) is shorter than the siamese branch's window "
                                     f"({params.n_fft} samples at {params.sample_rate_hz} Hz)")
            base_key = None
        else:
            self.base = _base_embedder(self.spec, directory, clip_s=self.clip_s, device=device)
            self.sample_rate_hz = self.base.sample_rate_hz
            self.dim = int(self.spec["head"]["dim"])
            if self.dim != self.base.dim:
                raise ModelWeightsError(
                    f"{directory / 'siamese.json'}: head of dimension {self.dim} over {self.base.key} of "
                    f"dimension {self.base.dim}; retrain with `soundalike train`"
                )
            base_key = self.base.key
        payload = json.dumps({"spec": self.spec, "clip_s": self.clip_s, "base": base_key}, sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:8]
        self.version = f"{SIAMESE_REVISION}-{self.weights_sha256[:12]}-{digest}"

    def _embed(self, clips: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            if self.base is not None:
                x = torch.from_numpy(self.base.embed(clips)).to(self.device)
            else:
                x = self.frontend(torch.from_numpy(np.ascontiguousarray(clips)).to(self.device))
            return self.branch(x).float().cpu().numpy()


def _base_embedder(spec: dict, directory: Path, *, clip_s: float, device: torch.device) -> Embedder:
    base = spec.get("base_embedder")
    if not isinstance(base, dict) or not isinstance(base.get("name"), str) or base["name"] == "siamese":
        raise ModelWeightsError(f"{directory / 'siamese.json'} names no usable base embedder for its head: {base!r}")
    where = base.get("weights_path")
    cfg = EmbedderConfig(name=base["name"], device=str(device), weights_path=where,
                         options=dict(base.get("options") or {}))
    try:
        return create_embedder(cfg, clip_s=clip_s)
    except (ModelWeightsError, ConfigError) as exc:
        if not where:
            looked = "no weights path"
        elif Path(where).expanduser().is_absolute():
            looked = f"weights at {where}"
        else:  # written before training stored absolute paths: relative to the working directory
            looked = (f"weights at the relative path {where!r}, looked for as {Path.cwd() / Path(where).expanduser()} "
                      "(retrain, or make the path absolute in siamese.json)")
        raise type(exc)(
            f"{directory / 'siamese.json'}: its head runs over the base embedder {base['name']} with {looked}, "
            f"which cannot be loaded: {exc}"
        ) from None


@register_embedder("siamese")
def make_siamese_embedder(config: EmbedderConfig, clip_s: float) -> SiameseEmbedder:
    """Registry factory: the branch saved in ``config.weights_path`` on ``config.device``.

    Raises
    ------
    ModelWeightsError
        No ``weights_path``, or no saved branch there.
    ConfigError
        ``embedder.options`` given (there are none), or an unusable device.
    """
    if config.options:
        raise ConfigError(f"the siamese embedder takes no embedder.options, got {sorted(config.options)}")
    if not config.weights_path:
        raise ModelWeightsError(
            "embedder siamese needs embedder.weights_path: the directory `soundalike train` wrote "
            "(default <workdir>/models/siamese)"
        )
    if not isinstance(clip_s, (int, float)) or isinstance(clip_s, bool) or not clip_s > 0:
        raise ParameterError(f"clip_s must be a positive number of seconds, got {clip_s!r}")
    path = Path(config.weights_path)
    directory = path.parent if path.is_file() else path  # the .safetensors or .json file also names it
    return SiameseEmbedder(directory, clip_s=float(clip_s), device=_resolve_device(config.device))
