"""The Embedder interface and the registry of embedders by name.

An embedder turns a batch of fixed-length mono clips into L2-normalised vectors. Everything
that embeds (the Spark job, the query model, the web app, benchmarks) gets its embedder from
:func:`create_embedder`, so one config yields one identical embedder everywhere.

Examples
--------
>>> emb = create_embedder(EmbedderConfig(name="mel"), clip_s=10.0)  # doctest: +SKIP
>>> vectors = emb.embed(clips)            # clips: float32 [n, emb.clip_samples]
>>> vectors.shape == (len(clips), emb.dim)
True
"""

from __future__ import annotations

import abc
from typing import Callable

import numpy as np

from soundalike.config import EmbedderConfig
from soundalike.errors import ConfigError, ParameterError


class Embedder(abc.ABC):
    """Maps clips [n, clip_samples] at ``sample_rate_hz`` to unit vectors [n, dim].

    Attributes
    ----------
    name : str
        Registry name (``"mel"``, ``"clap"``, ...).
    version : str
        Changes whenever the vectors would change: code revision, parameters, and the weights'
        checksum for learned models. Indexes only ever mix vectors of one ``(name, version)``.
    sample_rate_hz : int
        Rate the clips must be decoded at.
    clip_s : float
        Clip length the embedder is fed, seconds.
    dim : int
        Vector length.
    """

    name: str
    version: str
    sample_rate_hz: int
    clip_s: float
    dim: int

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_s * self.sample_rate_hz))

    @property
    def key(self) -> str:
        """``name@version``: the value stored in the ``embedder`` column."""
        return f"{self.name}@{self.version}"

    def embed(self, clips: np.ndarray) -> np.ndarray:
        """Embed a batch of clips.

        Parameters
        ----------
        clips : np.ndarray [shape=(n, clip_samples), dtype=float32]

        Returns
        -------
        np.ndarray [shape=(n, dim), dtype=float32]
            Each row has unit L2 norm.
        """
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim != 2 or clips.shape[1] != self.clip_samples:
            raise ParameterError(
                f"{self.name} embedder expects clips of shape (n, {self.clip_samples}) "
                f"({self.clip_s} s at {self.sample_rate_hz} Hz), got {clips.shape}"
            )
        if clips.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self._embed(clips), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    @abc.abstractmethod
    def _embed(self, clips: np.ndarray) -> np.ndarray:
        """Raw vectors [n, dim] for a validated, non-empty batch (normalised by :meth:`embed`)."""


EmbedderFactory = Callable[[EmbedderConfig, float], Embedder]
_REGISTRY: dict[str, EmbedderFactory] = {}
_WEIGHTLESS: set[str] = set()


def register_embedder(name: str, *, weights: bool = True) -> Callable[[EmbedderFactory], EmbedderFactory]:
    """Decorator: make ``factory(config, clip_s) -> Embedder`` available under ``name``;
    ``weights=False`` for an embedder that never reads ``embedder.weights_path``."""

    def decorate(factory: EmbedderFactory) -> EmbedderFactory:
        _REGISTRY[name] = factory
        (_WEIGHTLESS.discard if weights else _WEIGHTLESS.add)(name)
        return factory

    return decorate


def uses_weights(name: str) -> bool:
    """Whether the embedder ``name`` reads files from ``embedder.weights_path``."""
    _load_builtin()
    return name not in _WEIGHTLESS


def available_embedders() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_embedder(config: EmbedderConfig, *, clip_s: float) -> Embedder:
    """Build the embedder ``config.name`` for clips of ``clip_s`` seconds."""
    _load_builtin()
    factory = _REGISTRY.get(config.name)
    if factory is None:
        raise ConfigError(
            f"unknown embedder {config.name!r}; available: {', '.join(available_embedders())} "
            "(set embedder.name)"
        )
    return factory(config, clip_s)


def _load_builtin() -> None:
    # Importing a module registers its embedders; heavy dependencies (transformers, laion-clap)
    # load inside the factories.
    from soundalike.embedders import clap, mel, wav2vec2  # noqa: F401
    from soundalike.embedders import siamese  # noqa: F401
