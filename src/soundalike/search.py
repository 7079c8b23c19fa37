"""Search the catalogue with a query recording: the query half of the product, as plain Python.

A :class:`Searcher` holds an embedder, a :class:`~soundalike.index.ClipIndex` and the track
metadata. :meth:`Searcher.search` runs the same :func:`~soundalike.extract.extract_track` as the
batch job on the query, fetches each query clip's nearest catalogue clips and fuses them per song
(:func:`~soundalike.fusion.fuse`). :meth:`Searcher.search_text` does the same for a sentence with
an embedder that has a text tower (``clap``): the text becomes one query vector, which fetches its
nearest catalogue clips, fused per song by the same rule. The MLflow model, the CLI and the web
app all call it.

Examples
--------
>>> searcher = Searcher.load("work/index/current", cfg)  # doctest: +SKIP
>>> hits = searcher.search(open("query.mp3", "rb").read(), max_results=5)  # doctest: +SKIP
>>> hits[0]["title"], hits[0]["combined_score"]  # doctest: +SKIP
('Neon Run', 1.0)
>>> searcher.search_text("calm solo piano", max_results=5)["results"][0]["title"]  # doctest: +SKIP
'Quiet Keys'
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from soundalike.audio import AudioSource, decode_once, describe_source, load_audio, probe_audio
from soundalike.checksums import sha256_file
from soundalike.config import ClipsConfig, Config, FingerprintConfig, QueryConfig
from soundalike.embedders import Embedder, create_embedder
from soundalike.errors import AudioDecodeError, ModelWeightsError, ParameterError
from soundalike.extract import clip_policy, extract_track
from soundalike.fingerprint import FingerprintIndex
from soundalike.fusion import fuse, fuse_fingerprint
from soundalike.index import ClipIndex

TRACKS_FILE = "tracks.parquet"

#: Extra neighbours fetched per query clip when tracks are excluded (a track has ~20 clips).
K_MARGIN_EXCLUDED = 64

#: Hard bounds on request parameters, whatever a caller asks for.
MAX_RESULTS_LIMIT = 1000
TOP_K_LIMIT = 1000
#: Longest text query, characters (text towers read a few dozen tokens anyway).
MAX_TEXT_CHARS = 1000
#: A query whose header says at most this much over ``max_query_seconds`` is still taken (and
#: cut to the limit): mp3 and ogg headers give estimates, and encoders pad a few milliseconds.
QUERY_LENGTH_SLACK_S = 0.5


def check_query_length(source: AudioSource, max_seconds: float) -> None:
    """Refuse a recording longer than ``max_seconds`` by its header, before anything is decoded.

    A long query is refused, not cut: answering for its first ``max_seconds`` would look like an
    answer for the whole recording. ``QUERY_LENGTH_SLACK_S`` allows for estimated headers.

    Raises
    ------
    ParameterError
        The header says the recording is longer.
    AudioDecodeError
        ``source`` is not audio.
    """
    length_s = probe_audio(source).duration_s
    if length_s > max_seconds + QUERY_LENGTH_SLACK_S:
        raise ParameterError(
            f"the query is {length_s:.1f} s long; queries longer than max_query_seconds="
            f"{max_seconds:g} s are refused, send an excerpt of at most that length"
        )


@dataclass(frozen=True)
class QueryParams:
    """Per-request parameters, validated."""

    max_results: int
    top_k_per_chunk: int
    vote_weight: float
    exclude_track_ids: tuple[str, ...]
    max_query_seconds: float

    @classmethod
    def build(cls, defaults: QueryConfig, **given) -> "QueryParams":
        """Defaults from config, overridden by the non-None ``given`` values, each checked."""
        values = {
            "max_results": defaults.max_results,
            "top_k_per_chunk": defaults.top_k_per_chunk,
            "vote_weight": defaults.vote_weight,
            "exclude_track_ids": (),
            "max_query_seconds": defaults.max_query_seconds,
        }
        unknown = set(given) - set(values)
        if unknown:
            raise ParameterError(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in given.items() if v is not None})
        p = cls(
            max_results=_int_in("max_results", values["max_results"], 1, MAX_RESULTS_LIMIT),
            top_k_per_chunk=_int_in("top_k_per_chunk", values["top_k_per_chunk"], 1, TOP_K_LIMIT),
            vote_weight=_float_in("vote_weight", values["vote_weight"], 0.0, 1.0),
            exclude_track_ids=_str_tuple("exclude_track_ids", values["exclude_track_ids"]),
            max_query_seconds=_float_in("max_query_seconds", values["max_query_seconds"], 1.0, defaults.max_query_seconds),
        )
        return p


class Searcher:
    """An embedder + clip index + track metadata (+ a fingerprint index), ready to answer queries.

    With a :class:`~soundalike.fingerprint.FingerprintIndex` (built beside the clip index when
    ``fingerprint.enabled``), :meth:`search` also identifies the recording the query was cut
    from: songs with a confident, time-aligned landmark match come first, and every song carries
    a ``match`` (``offset_s`` of the query in it, aligned hits, speed) or ``None``.
    """

    def __init__(self, embedder: Embedder, index: ClipIndex, tracks: pd.DataFrame, clips_cfg: ClipsConfig,
                 query_cfg: QueryConfig, batch_size: int = 32, *, fingerprints: FingerprintIndex | None = None,
                 fingerprint_cfg: FingerprintConfig | None = None):
        if index.embedder != embedder.key or index.dim != embedder.dim:
            raise ModelWeightsError(
                f"the index was built with embedder {index.embedder} (dim {index.dim}) but queries would be "
                f"embedded with {embedder.key} (dim {embedder.dim}); rebuild the index with this embedder "
                "or load the embedder configuration the index was built with"
            )
        self.embedder = embedder
        self.index = index
        self.clips_cfg = clips_cfg
        self.query_cfg = query_cfg
        self.batch_size = batch_size
        self.tracks = tracks.set_index("track_id", drop=False)
        self.fingerprints = fingerprints
        # The index's own settings make the query's landmarks; the config only says how to fuse.
        self.fingerprint_cfg = fingerprint_cfg or (fingerprints.cfg if fingerprints is not None else None)

    @classmethod
    def load(cls, index_dir: str | os.PathLike, cfg: Config) -> "Searcher":
        """Load the index saved in ``index_dir`` and build the embedder ``cfg`` names."""
        index = ClipIndex.load(index_dir, cfg.index)
        tracks = pd.read_parquet(Path(index_dir) / TRACKS_FILE)
        embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
        # ClipIndex.load has verified every file in the manifest, the fingerprint files included.
        fingerprints = FingerprintIndex.load(index_dir, verify=False) if cfg.fingerprint.enabled else None
        return cls(embedder, index, tracks, cfg.clips, cfg.query, cfg.embedder.batch_size,
                   fingerprints=fingerprints, fingerprint_cfg=cfg.fingerprint)

    def search(self, source: AudioSource, **params) -> dict:
        """Rank catalogue songs by similarity to the recording ``source`` (path or bytes).

        Parameters
        ----------
        source : path or bytes
        **params
            ``max_results``, ``top_k_per_chunk``, ``vote_weight``, ``exclude_track_ids``,
            ``max_query_seconds`` (see :class:`QueryParams`).

        Returns
        -------
        dict
            ``{"results": [song, ...], "query_clips": n, "query_seconds": s, "timings_ms": {...}}``
            where each song has rank, track_id, path, title, tags, combined_score, votes,
            total_similarity, evidence (query_start_s, clip_start_s, distance, similarity) and,
            with a fingerprint index, ``match`` (see :func:`~soundalike.fusion.fuse_fingerprint`).

        Raises
        ------
        ParameterError
            A parameter out of range, or a recording longer than ``max_query_seconds`` (by its
            header, before it is decoded).
        AudioDecodeError
            ``source`` is not audio, or holds less than ``clips.min_tail_s`` of it.
        """
        p = QueryParams.build(self.query_cfg, **params)
        timings = {}
        t0 = time.perf_counter()
        check_query_length(source, p.max_query_seconds)
        name = describe_source(source)
        source = decode_once(source, max_seconds=p.max_query_seconds)  # an m4a is decoded once, not twice
        clips = extract_track(source, self.embedder, self.clips_cfg, batch_size=self.batch_size,
                              max_seconds=p.max_query_seconds)
        timings["decode_embed"] = (time.perf_counter() - t0) * 1000
        if len(clips) == 0:
            raise AudioDecodeError(
                name, f"query holds {clips.duration_s:.2f} s of audio; at least "
                f"{self.clips_cfg.min_tail_s:g} s (clips.min_tail_s) is needed"
            )
        keep = clips.indexable if clips.indexable.any() else np.ones(len(clips), bool)
        results = self._rank(clips.vectors[keep], clips.start_s[keep], p, timings)
        extra = {}
        if self.fingerprints is not None:
            t3 = time.perf_counter()
            fp_cfg = self.fingerprints.cfg
            wave = load_audio(source, fp_cfg.sample_rate_hz, duration_s=p.max_query_seconds)
            matches = self.fingerprints.match_wave(wave, fp_cfg.sample_rate_hz, max_results=p.max_results,
                                                   exclude_track_ids=p.exclude_track_ids)
            fused = fuse_fingerprint(results, matches, max_results=p.max_results,
                                     weight=self.fingerprint_cfg.fusion_weight)
            results = [s if "path" in s else self._describe(s) for s in fused]  # new ones need metadata
            timings["fingerprint"] = (time.perf_counter() - t3) * 1000
            top = next((m for m in matches if m.confident), None)
            extra["identified"] = None if top is None else {"track_id": top.track_id, **top.to_json()}
        return {
            "results": results,
            **extra,
            "query_clips": int(keep.sum()),
            "query_seconds": round(float(clips.duration_s), 3),
            "embedder": self.embedder.key,
            "clip_policy": clip_policy(self.clips_cfg),
            "timings_ms": {k: round(v, 2) for k, v in timings.items()},
        }

    def search_text(self, text: str, **params) -> dict:
        """Rank catalogue songs by how well they match a description (``"calm solo piano"``).

        The text is embedded by the embedder's text tower into the clip vectors' space; that one
        query vector fetches its ``top_k_per_chunk`` nearest catalogue clips, fused per song by
        the same rule as :meth:`search` (votes and total similarity, combined by ``vote_weight``).

        Parameters
        ----------
        text : str
            At most :data:`MAX_TEXT_CHARS` characters.
        **params
            As for :meth:`search` (``max_query_seconds`` is accepted and has no effect).

        Returns
        -------
        dict
            As :meth:`search` returns, with ``query_text``; ``query_clips`` is 1 (the text
            vector), ``query_seconds`` 0, and each match's ``query_start_s`` 0.

        Raises
        ------
        ParameterError
            Empty or overlong text, or an embedder without a text tower.
        ModelWeightsError
            The checkpoint's text tower or tokenizer files are missing.
        """
        p = QueryParams.build(self.query_cfg, **params)
        if not isinstance(text, str) or not text.strip():
            raise ParameterError(f"text must be a non-empty string, got {text!r}"[:200])
        if len(text) > MAX_TEXT_CHARS:
            raise ParameterError(f"text must be at most {MAX_TEXT_CHARS} characters, got {len(text)}")
        embed_text = getattr(self.embedder, "embed_text", None)
        if embed_text is None:
            raise ParameterError(
                f"embedder {self.embedder.key} has no text tower, so it cannot search by text; "
                "build the index with embedder.name=clap"
            )
        timings = {}
        t0 = time.perf_counter()
        vector = np.asarray(embed_text([text.strip()]), dtype=np.float32)
        timings["embed_text"] = (time.perf_counter() - t0) * 1000
        results = self._rank(vector, np.zeros(1), p, timings)
        return {
            "results": results,
            "query_text": text.strip(),
            "query_clips": 1,
            "query_seconds": 0.0,
            "embedder": self.embedder.key,
            "clip_policy": clip_policy(self.clips_cfg),
            "timings_ms": {k: round(v, 2) for k, v in timings.items()},
        }

    def _rank(self, vectors: np.ndarray, query_start_s: np.ndarray, p: QueryParams, timings: dict) -> list[dict]:
        """Query vectors [q, dim] (starting at ``query_start_s`` [q]) → ranked, described songs."""
        t1 = time.perf_counter()
        k = p.top_k_per_chunk
        if p.exclude_track_ids:
            # An excluded track (the query's own, say) can fill every neighbour slot of a clip;
            # fetch more, drop it, and keep each clip's k best of the rest.
            k = min(max(len(self.index), 1), k + K_MARGIN_EXCLUDED)
        sims, rows = self.index.search(vectors, k)
        tids, cidx, cstart = self.index.lookup(rows)
        if p.exclude_track_ids:
            sims, tids, cidx, cstart = _drop_excluded(sims, tids, cidx, cstart, set(p.exclude_track_ids),
                                                      p.top_k_per_chunk)
        timings["search"] = (time.perf_counter() - t1) * 1000
        t2 = time.perf_counter()
        songs = fuse(query_start_s, sims, tids, cstart, cidx, max_results=p.max_results,
                     vote_weight=p.vote_weight, exclude_track_ids=p.exclude_track_ids)
        results = [self._describe(s.to_json()) for s in songs]
        timings["fusion"] = (time.perf_counter() - t2) * 1000
        return results

    def _describe(self, song: dict) -> dict:
        row = self.tracks.loc[song["track_id"]] if song["track_id"] in self.tracks.index else None
        if isinstance(row, pd.DataFrame):
            row = row.iloc[0]
        head = {
            "rank": song.pop("rank"),
            "track_id": song.pop("track_id"),
            "path": None if row is None else str(row["path"]),
            "title": None if row is None else str(row["title"]),
            "tags": [] if row is None else [str(t) for t in (row["tags"] if row["tags"] is not None else [])],
        }
        return {**head, **song}


def _drop_excluded(sims, tids, cidx, cstart, excluded: set, k: int):
    """Per query clip, the first ``k`` neighbours whose track is not excluded (padded with misses)."""
    q = sims.shape[0]
    out_s = np.full((q, k), -np.inf, dtype=np.float32)
    out_t = np.full((q, k), None, dtype=object)
    out_i = np.full((q, k), -1, dtype=np.int64)
    out_c = np.full((q, k), np.nan)
    for i in range(q):
        keep = [j for j in range(sims.shape[1]) if tids[i, j] is not None and tids[i, j] not in excluded][:k]
        n = len(keep)
        out_s[i, :n], out_t[i, :n], out_i[i, :n], out_c[i, :n] = sims[i, keep], tids[i, keep], cidx[i, keep], cstart[i, keep]
    return out_s, out_t, out_i, out_c


def query_track_id(path: str | os.PathLike) -> str:
    """The track id a file would have in the catalogue (its content hash), for --exclude-self."""
    return sha256_file(path)


def _int_in(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)) or (
        isinstance(value, float) and not value.is_integer()
    ):
        raise ParameterError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= int(value) <= high:
        raise ParameterError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def _float_in(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    if not low <= float(value) <= high:
        raise ParameterError(f"{name} must be in [{low:g}, {high:g}], got {value}")
    return float(value)


def _str_tuple(name: str, value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value) or len(value) > 10_000:
        raise ParameterError(f"{name} must be a list of track id strings, got {value!r}"[:200])
    return tuple(value)
