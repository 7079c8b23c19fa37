"""Embedders: clips in, unit vectors out. See :mod:`soundalike.embedders.base`."""

from soundalike.embedders.base import Embedder, available_embedders, create_embedder, register_embedder, uses_weights

__all__ = ["Embedder", "available_embedders", "create_embedder", "register_embedder", "uses_weights"]
