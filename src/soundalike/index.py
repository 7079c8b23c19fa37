"""The clip index: FAISS over unit vectors (inner product = cosine), plus its id map.

The index type is a ``faiss.index_factory`` string chosen by catalogue size (:func:`choose_factory`):
exact ``Flat`` for small catalogues, ``HNSW`` or ``IVF-PQ`` with exact re-ranking (``,RFlat``) for
large ones. An index is saved as a directory with FAISS's own file, the id map as parquet and a
manifest (JSON) holding the embedder, dimension, factory and SHA-256 of each file; loading
verifies those checksums. Nothing is pickled.

Examples
--------
>>> idx = build_index(vectors, ids, embedder="mel@1-abc", factory="Flat")  # doctest: +SKIP
>>> sims, rows = idx.search(queries, k=5)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from soundalike.checksums import sha256_file
from soundalike.config import IndexConfig
from soundalike.errors import ConfigError, ModelWeightsError, ParameterError

INDEX_FILE = "clips.faiss"
IDS_FILE = "ids.parquet"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


def choose_factory(n_vectors: int, dim: int, params: IndexConfig = IndexConfig()) -> str:
    """The factory string for ``n_vectors`` of ``dim`` under ``params``.

    Raises
    ------
    ConfigError
        ``params.factory`` is set and faiss cannot build it for ``dim``-dimensional vectors
        (``PQ32`` on the 225-dim mel embedder: ``PQ`` needs ``dim % M == 0``).
    """
    if params.factory != "auto":
        reason = factory_error(params.factory, dim)
        if reason:
            raise ConfigError(f"faiss cannot build index.factory {params.factory!r} for the embedder's {dim}-dim vectors: "
                              f"{reason}")
        return params.factory
    if n_vectors <= params.exact_max:
        return "Flat"
    if n_vectors <= params.hnsw_max:
        return "HNSW32,Flat"
    nlist = int(min(65536, max(1024, 4 * np.sqrt(n_vectors))))
    # PQ needs m | dim; take the largest m <= 64 (e.g. 45 sub-quantizers of 5 dims for dim 225).
    m = max(m for m in range(1, min(64, dim) + 1) if dim % m == 0)
    return f"IVF{nlist},PQ{m}x8,RFlat"


def factory_error(factory: str, dim: int) -> str | None:
    """Why faiss cannot build ``factory`` for ``dim``-dimensional vectors, or ``None`` if it can.

    Builds the empty index (no training, no vectors); a PQ with many bits per code still
    allocates its codebook here (``PQ…x16`` at 225 dims: about 60 MB, freed at once).
    """
    import faiss

    try:
        faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        return _faiss_reason(exc)
    return None


#: The dimension :func:`factory_syntax_error` parses at. faiss parses the whole string before it
#: builds anything, and at dimension 1 every component that needs more (PQ, PCA, ...) stops at its
#: own size check before allocating: the check costs ~1 ms and no memory on every config load
#: (at 2520, a PQ9x16 allocated 620 MB of codebook).
_SYNTAX_DIM = 1


def factory_syntax_error(factory: str) -> str | None:
    """Why ``factory`` is not a ``faiss.index_factory`` string at all, or ``None``.

    Only parse errors count: whether the string fits the vectors depends on their dimension,
    known at build time (:func:`factory_error`).
    """
    if not factory.strip():
        return "it is empty"
    reason = factory_error(factory, _SYNTAX_DIM)
    return reason if reason and "could not parse" in reason else None


def _faiss_reason(exc: Exception) -> str:
    """The useful end of a faiss C++ error ("Error in ... at file.cpp:64: Error: '...' failed: why")."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    for marker in ("failed: ", "Error: ", ".cpp:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    return text.split(": ", 1)[1] if text[:1].isdigit() and ": " in text else text.strip()


def record_checksums(directory: str | os.PathLike, names: Iterable[str], **sections) -> None:
    """Add the SHA-256 of ``names`` (files in ``directory``) to its index manifest.

    :meth:`ClipIndex.load` verifies every file the manifest lists, so files written beside the
    FAISS index (the track metadata, the config, the fingerprint index) are checked at load too.
    ``sections`` are stored as extra top-level manifest entries.
    """
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    manifest = json.loads(path.read_text()) if path.is_file() else {"sha256": {}}
    manifest.setdefault("sha256", {}).update({n: sha256_file(directory / n) for n in names})
    manifest.update(sections)
    path.write_text(json.dumps(manifest, indent=2))


@dataclass
class ClipIndex:
    """A FAISS index of clip vectors and the clip each row stands for.

    Attributes
    ----------
    index : faiss.Index
    track_ids : np.ndarray [shape=(n,), dtype=object]
    clip_idx : np.ndarray [shape=(n,), dtype=int32]
    start_s : np.ndarray [shape=(n,), dtype=float64]
    embedder : str
        ``name@version`` of the embedder the vectors came from.
    factory : str
    """

    index: object
    track_ids: np.ndarray
    clip_idx: np.ndarray
    start_s: np.ndarray
    embedder: str
    factory: str

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest clips by cosine similarity.

        Parameters
        ----------
        queries : np.ndarray [shape=(q, dim), dtype=float32]
            Unit vectors.
        k : int

        Returns
        -------
        similarities : np.ndarray [shape=(q, k), dtype=float32]
            ``-inf`` where fewer than k neighbours exist.
        rows : np.ndarray [shape=(q, k), dtype=int64]
            Row numbers into the id map, ``-1`` where missing.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ParameterError(f"queries must be (q, {self.dim}), got {queries.shape}")
        if k < 1:
            raise ParameterError(f"k must be >= 1, got {k}")
        k = min(k, max(1, len(self)))
        sims, rows = self.index.search(queries, k)
        sims = np.where(rows < 0, -np.inf, sims).astype(np.float32)
        return sims, rows

    def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(track_ids, clip_idx, start_s) for ``rows`` [q, k]; missing rows give None/-1/NaN."""
        safe = np.where(rows < 0, 0, rows)
        tids = self.track_ids[safe].astype(object)
        tids[rows < 0] = None
        return tids, np.where(rows < 0, -1, self.clip_idx[safe]), np.where(rows < 0, np.nan, self.start_s[safe])

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index, id map and manifest into ``directory`` (created)."""
        import faiss

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        pd.DataFrame(
            {"track_id": self.track_ids.astype(str), "clip_idx": self.clip_idx, "start_s": self.start_s}
        ).to_parquet(directory / IDS_FILE, index=False)
        manifest = {
            "format_version": FORMAT_VERSION,
            "embedder": self.embedder,
            "dim": self.dim,
            "factory": self.factory,
            "vectors": len(self),
            "sha256": {name: sha256_file(directory / name) for name in (INDEX_FILE, IDS_FILE)},
        }
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, params: IndexConfig = IndexConfig()) -> "ClipIndex":
        """Load an index saved by :meth:`save`, verifying the files' checksums.

        Raises
        ------
        ModelWeightsError
            Missing files, a checksum mismatch or an unknown format version.
        """
        import faiss

        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ModelWeightsError(f"no index at {directory}: {MANIFEST_FILE} is missing (run the index stage)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise ModelWeightsError(f"{manifest_path} is not valid JSON: {exc}") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ModelWeightsError(f"{manifest_path}: unsupported index format {manifest.get('format_version')!r}")
        for name, digest in manifest["sha256"].items():
            path = directory / name
            if not path.is_file() or sha256_file(path) != digest:
                raise ModelWeightsError(f"index file {path} is missing or does not match its checksum; rebuild the index")
        index = faiss.read_index(str(directory / INDEX_FILE))
        ids = pd.read_parquet(directory / IDS_FILE)
        if len(ids) != index.ntotal or index.d != manifest["dim"]:
            raise ModelWeightsError(f"index at {directory} is inconsistent: {index.ntotal} vectors vs {len(ids)} ids")
        tune(index, params)
        return cls(
            index=index,
            track_ids=ids["track_id"].to_numpy(dtype=object),
            clip_idx=ids["clip_idx"].to_numpy(dtype=np.int32),
            start_s=ids["start_s"].to_numpy(dtype=np.float64),
            embedder=manifest["embedder"],
            factory=manifest["factory"],
        )


def build_index(
    vectors: np.ndarray,
    track_ids: np.ndarray,
    clip_idx: np.ndarray,
    start_s: np.ndarray,
    *,
    embedder: str,
    factory: str = "Flat",
    params: IndexConfig = IndexConfig(),
    seed: int = 0,
) -> ClipIndex:
    """Build an inner-product FAISS index over unit ``vectors`` [n, dim]; trains if needed."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    if vectors.ndim != 2 or n == 0:
        raise ParameterError(f"vectors must be a non-empty (n, dim) array, got {vectors.shape}")
    if not (len(track_ids) == len(clip_idx) == len(start_s) == n):
        raise ParameterError("track_ids, clip_idx and start_s must each have one entry per vector")
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"faiss cannot build index.factory {factory!r} for {vectors.shape[1]}-dim vectors: "
                          f"{_faiss_reason(exc)}") from None
    if not index.is_trained:
        train = vectors
        if n > 256 * 1024:
            train = vectors[np.random.default_rng(seed).choice(n, 256 * 1024, replace=False)]
        try:
            index.train(train)
        except RuntimeError as exc:  # e.g. IVF4096 on fewer than 4096 vectors
            raise ConfigError(f"index.factory {factory!r} cannot be trained on {n} vectors: "
                              f"{_faiss_reason(exc)}") from None
    index.add(vectors)
    tune(index, params)
    return ClipIndex(
        index=index,
        track_ids=np.asarray(track_ids, dtype=object),
        clip_idx=np.asarray(clip_idx, dtype=np.int32),
        start_s=np.asarray(start_s, dtype=np.float64),
        embedder=embedder,
        factory=factory,
    )


def tune(index, params: IndexConfig) -> None:
    """Apply the search-time knobs that the index type understands."""
    import faiss

    space = faiss.ParameterSpace()
    for name, value in (("nprobe", params.nprobe), ("efSearch", params.ef_search), ("k_factor_rf", params.k_factor)):
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            pass  # not a parameter of this index type


def recall_at_k(index: ClipIndex, vectors: np.ndarray, *, k: int = 10, sample: int = 1000, seed: int = 0) -> float:
    """Recall@k of ``index`` against exact search, on a random sample of ``vectors`` as queries."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rng = np.random.default_rng(seed)
    queries = vectors[rng.choice(vectors.shape[0], min(sample, vectors.shape[0]), replace=False)]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, k)
    _, got = index.index.search(queries, k)
    hits = sum(len(set(t) & set(g)) for t, g in zip(truth, got))
    return hits / float(truth.size)
