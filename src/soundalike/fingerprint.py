"""Landmark fingerprints: identify a recording from a short, degraded excerpt.

A track becomes a set of *landmarks*: pairs of spectral peaks ``(f1, t1) → (f2, t2)`` hashed as
``(f1, f2 - f1, t2 - t1)`` and stored with the anchor time ``t1``. The spectrogram is computed at
8 kHz and peaks are picked only between ``fmin_hz`` and ``fmax_hz`` (300-3400 Hz by default), on
a spectrum whitened along frequency, so a telephone band, a 64 kbit/s mp3, pink noise or a gain
change keep most landmarks: a peak is a local maximum, whatever the level or the tilt.

An excerpt is identified by *time-consistent evidence*: every query hash found in the
:class:`FingerprintIndex` votes for ``(track, t_track - t_query)``; the source is the track whose
votes pile up on one offset, and that offset is where the excerpt starts in it. Unrelated tracks
share hashes too, but at scattered offsets. A ±3 % speed change (tape, DJ deck) shifts every
frequency and time by 3 %, which breaks the hashes; the query is therefore also fingerprinted
after resampling by each of ``speed_factors`` (undoing 0.97…1.03 speed), and the best-aligned
copy wins, which also reports the speed.

The index is plain numpy: hashes sorted (``uint32``) with the track row and anchor time of each
(``int32``), saved as ``.npy`` files beside the FAISS index and checksummed in its manifest.
Nothing is pickled.

Examples
--------
>>> fp = fingerprint_wave(wave, sr=44100, cfg=FingerprintConfig())  # doctest: +SKIP
>>> index = FingerprintIndex.from_fingerprints({"a1b2...": fp}, cfg)  # doctest: +SKIP
>>> index.match_wave(excerpt, 44100)[0]  # doctest: +SKIP
FingerprintMatch(track_id='a1b2...', offset_s=42.3, aligned_hits=311, ...)
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import soxr
from scipy.ndimage import maximum_filter, uniform_filter1d

from soundalike.audio import AudioSource, describe_source, load_audio
from soundalike.checksums import sha256_file
from soundalike.config import FingerprintConfig
from soundalike.errors import AudioDecodeError, ModelWeightsError, ParameterError

#: Files of a saved index (inside the index directory, listed in its manifest).
HASHES_FILE = "fp_hashes.npy"
ROWS_FILE = "fp_rows.npy"
TIMES_FILE = "fp_times.npy"
TRACKS_FILE = "fp_tracks.json"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

_DF_BITS, _DT_BITS = 7, 6


@dataclass(frozen=True)
class Fingerprint:
    """The landmarks of one recording.

    Attributes
    ----------
    hashes : np.ndarray [shape=(n,), dtype=uint32]
    times : np.ndarray [shape=(n,), dtype=int32]
        Anchor frame of each hash (``frame_s`` seconds per frame).
    duration_s : float
    frame_s : float
    """

    hashes: np.ndarray
    times: np.ndarray
    duration_s: float
    frame_s: float

    def __len__(self) -> int:
        return int(self.hashes.shape[0])


@dataclass(frozen=True)
class FingerprintMatch:
    """A catalogue track whose landmarks agree with the query's on one offset.

    Attributes
    ----------
    track_id : str
    offset_s : float
        Where the query starts in the track, seconds (negative: the query starts before it).
    aligned_hits : int
        Query landmarks that agree on that offset (±``offset_tolerance`` frames).
    query_hashes : int
        Landmarks in the query (for the copy that matched).
    speed : float
        The speed factor of the query relative to the track (1.03: played 3 % fast).
    confident : bool
        ``aligned_hits >= min_aligned_hits``, comparable to the best match, ``min_margin``
        times the background (the best match that is not comparable), and at least
        ``min_peak_share`` of ``matched_hashes``.
    matched_hashes : int
        Landmark matches with the track at any offset (the aligned ones included).
    """

    track_id: str
    offset_s: float
    aligned_hits: int
    query_hashes: int
    speed: float
    confident: bool
    matched_hashes: int

    @property
    def peak_share(self) -> float:
        """Share of the landmark matches with this track that agree on its offset."""
        return self.aligned_hits / self.matched_hashes if self.matched_hashes else 1.0

    @property
    def hit_ratio(self) -> float:
        """Share of the query's landmarks that aligned."""
        return self.aligned_hits / self.query_hashes if self.query_hashes else 0.0

    def to_json(self) -> dict:
        return {"offset_s": round(self.offset_s, 3), "aligned_hits": self.aligned_hits,
                "query_hashes": self.query_hashes, "hit_ratio": round(self.hit_ratio, 4),
                "peak_share": round(self.peak_share, 4), "speed": self.speed, "confident": self.confident}


# --------------------------------------------------------------------------- landmarks


def frame_seconds(cfg: FingerprintConfig) -> float:
    """Seconds per spectrogram frame (the unit of landmark times)."""
    return cfg.hop_length / float(cfg.sample_rate_hz)


def fingerprint_wave(wave: np.ndarray, sr: int, cfg: FingerprintConfig) -> Fingerprint:
    """Landmark hashes of a mono wave.

    Parameters
    ----------
    wave : np.ndarray [shape=(n,), dtype=float32]
    sr : int
        Its sample rate, Hz; resampled to ``cfg.sample_rate_hz`` when it differs.
    cfg : FingerprintConfig

    Returns
    -------
    Fingerprint
        Possibly empty (silence, or shorter than one frame).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ParameterError(f"wave must be mono [n], got shape {wave.shape}")
    if sr != cfg.sample_rate_hz:
        wave = soxr.resample(wave, sr, cfg.sample_rate_hz, quality="HQ").astype(np.float32, copy=False)
    duration_s = wave.shape[0] / float(cfg.sample_rate_hz)
    t, f = _peaks(wave, cfg)
    hashes, times = _pair(t, f, cfg)
    return Fingerprint(hashes, times, duration_s, frame_seconds(cfg))


def fingerprint_source(source: AudioSource, cfg: FingerprintConfig, *, max_seconds: float | None = None) -> Fingerprint:
    """Decode ``source`` once at ``cfg.sample_rate_hz`` and fingerprint it."""
    return fingerprint_wave(load_audio(source, cfg.sample_rate_hz, duration_s=max_seconds), cfg.sample_rate_hz, cfg)


def _band(cfg: FingerprintConfig) -> tuple[int, int]:
    bin_hz = cfg.sample_rate_hz / cfg.n_fft
    return int(np.ceil(cfg.fmin_hz / bin_hz)), int(np.floor(cfg.fmax_hz / bin_hz)) + 1


def _log_spectrogram(wave: np.ndarray, cfg: FingerprintConfig) -> tuple[np.ndarray, np.ndarray]:
    """Whitened log power in the band, float32 [frames, bins], and each frame's level (log10 power)."""
    n_fft, hop = cfg.n_fft, cfg.hop_length
    if wave.shape[0] < n_fft:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop]
    lo, hi = _band(cfg)
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)[:, lo:hi]) ** 2
    level = np.log10(spec.mean(axis=1) + 1e-12).astype(np.float32)
    log = np.log10(spec + 1e-10).astype(np.float32)
    # Whitening along frequency: a peak must stand out of its neighbourhood, so a filter's tilt
    # (phone band, mp3 low-pass) or coloured noise moves few peaks.
    return log - uniform_filter1d(log, size=cfg.whiten_bins, axis=1, mode="nearest"), level


def _peaks(wave: np.ndarray, cfg: FingerprintConfig) -> tuple[np.ndarray, np.ndarray]:
    """Constellation peaks: (frame, bin) of local maxima, the strongest ``peaks_per_s`` per second."""
    log, level = _log_spectrogram(wave, cfg)
    if log.size == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    local = maximum_filter(log, size=(2 * cfg.peak_dt_frames + 1, 2 * cfg.peak_df_bins + 1), mode="nearest")
    is_peak = log == local
    # Frames far below the track's loudest carry no structure worth hashing (silence, dither).
    is_peak &= (level > level.max() - cfg.floor_db / 10.0)[:, None]
    t, f = np.nonzero(is_peak)
    if t.size == 0:
        return t.astype(np.int32), f.astype(np.int32)
    # Strongest peaks per block of ~1 s, so density is even over loud and quiet passages.
    block = max(1, int(round(1.0 / frame_seconds(cfg))))
    strength = log[t, f]
    order = np.lexsort((-strength, t // block))
    t, f = t[order], f[order]
    first = np.r_[0, np.flatnonzero(np.diff(t // block)) + 1]
    rank = np.arange(t.size) - np.repeat(first, np.diff(np.r_[first, t.size]))
    keep = rank < cfg.peaks_per_s
    t, f = t[keep], f[keep]
    order = np.lexsort((f, t))
    return t[order].astype(np.int32), f[order].astype(np.int32)


def _pair(t: np.ndarray, f: np.ndarray, cfg: FingerprintConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hash each anchor with its first ``fan_out`` peaks in the target zone after it."""
    n = t.size
    if n < 2:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    width = min(n - 1, cfg.pair_window)
    j = np.arange(n)[:, None] + np.arange(1, width + 1)[None, :]
    valid = j < n
    j = np.where(valid, j, n - 1)
    dt = t[j] - t[:, None]
    df = f[j] - f[:, None]
    q = cfg.freq_quant_bins
    ok = valid & (dt >= 1) & (dt <= cfg.max_dt_frames) & (np.abs(df) <= cfg.max_df_bins)
    ok &= np.cumsum(ok, axis=1) <= cfg.fan_out
    a, k = np.nonzero(ok)
    dfq = (df[a, k] // q) + (1 << (_DF_BITS - 1))
    hashes = ((f[a] // q).astype(np.uint32) << (_DF_BITS + _DT_BITS)) | (dfq.astype(np.uint32) << _DT_BITS) \
        | dt[a, k].astype(np.uint32)
    return hashes.astype(np.uint32), t[a].astype(np.int32)


# --------------------------------------------------------------------------- the index


@dataclass
class FingerprintIndex:
    """An inverted index of landmark hashes → (track row, anchor frame).

    Attributes
    ----------
    track_ids : np.ndarray [shape=(t,), dtype=object]
    durations_s : np.ndarray [shape=(t,), dtype=float64]
    hashes : np.ndarray [shape=(n,), dtype=uint32]
        Sorted.
    rows : np.ndarray [shape=(n,), dtype=int32]
        Track row (into ``track_ids``) of each hash.
    times : np.ndarray [shape=(n,), dtype=int32]
        Anchor frame of each hash in its track.
    cfg : FingerprintConfig
        The settings the landmarks were made with (queries must use the same).
    """

    track_ids: np.ndarray
    durations_s: np.ndarray
    hashes: np.ndarray
    rows: np.ndarray
    times: np.ndarray
    cfg: FingerprintConfig

    def __len__(self) -> int:
        return int(self.hashes.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.rows.nbytes + self.times.nbytes)

    @classmethod
    def from_fingerprints(cls, fingerprints: Mapping[str, Fingerprint], cfg: FingerprintConfig) -> "FingerprintIndex":
        """Index ``{track_id: Fingerprint}`` (track order: as given)."""
        ids = list(fingerprints)
        parts = [fingerprints[tid] for tid in ids]
        hashes = np.concatenate([p.hashes for p in parts]) if parts else np.zeros(0, np.uint32)
        times = np.concatenate([p.times for p in parts]) if parts else np.zeros(0, np.int32)
        rows = np.repeat(np.arange(len(parts), dtype=np.int32), [len(p) for p in parts])
        order = np.argsort(hashes, kind="stable")
        return cls(np.asarray(ids, dtype=object), np.array([p.duration_s for p in parts], np.float64),
                   hashes[order].astype(np.uint32), rows[order], times[order].astype(np.int32), cfg)

    def track_fingerprint(self, row: int) -> Fingerprint:
        """The landmarks of the track at ``row`` (for comparing catalogue tracks with each other)."""
        sel = np.flatnonzero(self.rows == row)
        order = np.argsort(self.times[sel], kind="stable")
        sel = sel[order]
        return Fingerprint(self.hashes[sel], self.times[sel], float(self.durations_s[row]), frame_seconds(self.cfg))

    # ----------------------------------------------------------------------- query

    def votes(self, fp: Fingerprint, *, exclude_rows: Iterable[int] = (),
              anchors_min_hits: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per track row, its best offset and the hits aligned there.

        Parameters
        ----------
        anchors_min_hits : int or None
            Collect the aligned query anchors of rows with at least this many hits (``None``:
            none; they cost a pass per row and only duplicates need them).

        Returns
        -------
        rows, offsets, hits, totals, query_times
            ``rows`` [m] track rows with any vote, ``offsets`` [m] best offset (frames),
            ``hits`` [m] aligned hits there (summed over ±``offset_tolerance`` frames),
            ``totals`` [m] landmark matches with the row at any offset; and (object array [m])
            the query anchor frames that aligned, per row (empty where not collected).
        """
        empty = np.zeros(0, np.int64)
        rows, delta, qi = self._matches(fp)
        excl = np.fromiter(exclude_rows, dtype=np.int64)
        if excl.size and rows.size:
            keep = ~np.isin(rows, excl)
            rows, delta, qi = rows[keep], delta[keep], qi[keep]
        if rows.size == 0:
            return empty, empty, empty, empty, np.zeros(0, object)
        tol = self.cfg.offset_tolerance_frames
        span = 1 << 24  # offsets in frames: ±3 days at 32 ms
        key = rows * span + (delta + span // 2)
        uniq, cnt = np.unique(key, return_counts=True)
        # Votes within ±tol frames of an offset count for it: a speed residual smears offsets.
        csum = np.r_[0, np.cumsum(cnt)]
        summed = csum[np.searchsorted(uniq, uniq + tol, side="right")] - csum[np.searchsorted(uniq, uniq - tol, side="left")]
        krow = uniq // span
        order = np.lexsort((-summed, krow))
        best = order[np.r_[0, np.flatnonzero(np.diff(krow[order])) + 1]]
        best_rows, best_key, best_hits = krow[best], uniq[best], summed[best]
        totals = np.bincount(krow, weights=cnt)[best_rows].astype(np.int64)  # best_rows: ascending, unique
        per_row = np.empty(best_rows.size, dtype=object)
        per_row[:] = [np.zeros(0, np.int32)] * best_rows.size
        if anchors_min_hits is None:
            return best_rows, best_key % span - span // 2, best_hits, totals, per_row
        wanted = best_rows[best_hits >= anchors_min_hits]
        pick = np.isin(rows, wanted)
        rows, key, qi = rows[pick], key[pick], qi[pick]
        # The query anchors behind each row's best offset: where in the query the evidence lies.
        near = np.abs(key - best_key[np.searchsorted(best_rows, rows)]) <= tol
        which = np.searchsorted(best_rows, rows[near])
        anchors = fp.times[qi[near]]
        order = np.lexsort((anchors, which))
        which, anchors = which[order], anchors[order]
        bounds = np.searchsorted(which, np.arange(best_rows.size + 1))
        for i in np.flatnonzero(np.isin(best_rows, wanted)):
            per_row[i] = np.unique(anchors[bounds[i]:bounds[i + 1]])
        return best_rows, best_key % span - span // 2, best_hits, totals, per_row

    def _matches(self, fp: Fingerprint) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (catalogue row, offset in frames, query hash number) whose hashes are equal."""
        empty = np.zeros(0, np.int64)
        if len(fp) == 0 or len(self) == 0:
            return empty, empty, empty
        starts = self._bucket_starts()
        qh = np.minimum(fp.hashes.astype(np.int64), starts.size - 2)
        lo = starts[qh].astype(np.int64)
        counts = starts[qh + 1].astype(np.int64) - lo
        counts[fp.hashes.astype(np.int64) > starts.size - 2] = 0  # hashes no catalogue track has
        # Stop words: hashes that much of the catalogue has carry no evidence and cost the most.
        counts = np.where(counts > self.cfg.max_bucket, 0, counts)
        total = int(counts.sum())
        if total == 0:
            return empty, empty, empty
        qi = np.repeat(np.arange(qh.size), counts)
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        ref = np.repeat(lo, counts) + within
        delta = self.times[ref].astype(np.int64) - fp.times[qi].astype(np.int64)
        return self.rows[ref].astype(np.int64), delta, qi

    def _bucket_starts(self) -> np.ndarray:
        """Where each hash value's entries begin in the sorted arrays (a CSR row pointer), cached.

        Hashes are < 2^22, so the table is at most 16 MB and a lookup is one indexing instead of a
        binary search over the whole index.
        """
        cached = getattr(self, "_starts", None)
        if cached is None or cached[0] != len(self):
            top = int(self.hashes[-1]) + 2 if len(self) else 2
            dtype = np.int32 if len(self) < 2**31 else np.int64
            table = np.searchsorted(self.hashes, np.arange(top, dtype=np.int64)).astype(dtype)
            self._starts = cached = (len(self), table)
        return cached[1]

    def offsets(self, fp: Fingerprint, row: int, *, k: int = 4, min_gap_s: float = 1.0) -> list[tuple[float, int]]:
        """The ``k`` best-voted offsets (seconds, hits) of ``fp`` in the track at ``row``, ``min_gap_s`` apart.

        Music built from repeated bars aligns with itself a bar or two away almost as well as at
        the true offset; callers that can check the audio (duplicates) try these runners-up too.
        """
        rows, delta, _ = self._matches(fp)
        delta = delta[rows == row]
        if delta.size == 0:
            return []
        tol = self.cfg.offset_tolerance_frames
        uniq, cnt = np.unique(delta, return_counts=True)
        csum = np.r_[0, np.cumsum(cnt)]
        summed = csum[np.searchsorted(uniq, uniq + tol, side="right")] - csum[np.searchsorted(uniq, uniq - tol, side="left")]
        gap = min_gap_s / frame_seconds(self.cfg)
        chosen: list[tuple[int, int]] = []
        for i in np.argsort(-summed, kind="stable"):
            if all(abs(int(uniq[i]) - c) >= gap for c, _ in chosen):
                chosen.append((int(uniq[i]), int(summed[i])))
                if len(chosen) == k:
                    break
        return [(c * frame_seconds(self.cfg), h) for c, h in chosen]

    def match(self, fp: Fingerprint, *, max_results: int = 10, speed: float = 1.0,
              exclude_track_ids: Iterable[str] = ()) -> list[FingerprintMatch]:
        """Tracks whose landmarks align with ``fp``'s, best first (one query copy, no speed search)."""
        excluded = set(exclude_track_ids)
        exclude_rows = [i for i, t in enumerate(self.track_ids) if t in excluded] if excluded else ()
        rows, offsets, hits, totals, _ = self.votes(fp, exclude_rows=exclude_rows)
        if rows.size == 0:
            return []
        order = np.lexsort((rows, -hits))[:max_results]
        frame_s = frame_seconds(self.cfg)
        ranked = [FingerprintMatch(str(self.track_ids[rows[i]]), float(offsets[i]) * frame_s, int(hits[i]), len(fp),
                                   float(speed), False, int(totals[i])) for i in order]
        return _decide(ranked, self.cfg)

    def match_wave(self, wave: np.ndarray, sr: int, *, max_results: int = 10,
                   exclude_track_ids: Iterable[str] = ()) -> list[FingerprintMatch]:
        """Identify a query wave, trying each of ``cfg.speed_factors``; best match per track first.

        Raises
        ------
        ParameterError
            A query shorter than ``cfg.min_query_s``.
        """
        wave = np.asarray(wave, dtype=np.float32)
        duration = wave.shape[0] / float(sr)
        if duration < self.cfg.min_query_s:
            raise ParameterError(
                f"the query holds {duration:.2f} s of audio; fingerprint identification needs at least "
                f"{self.cfg.min_query_s:g} s (fingerprint.min_query_s)"
            )
        base = wave if sr == self.cfg.sample_rate_hz else soxr.resample(
            wave, sr, self.cfg.sample_rate_hz, quality="HQ").astype(np.float32)
        t, f = _peaks(base, self.cfg)
        lo, _ = _band(self.cfg)
        best: dict[str, FingerprintMatch] = {}
        for factor in self.cfg.speed_factors:
            # A query played `factor` times fast has its times divided and its frequencies
            # multiplied by `factor`: undo that on the peaks (the same as re-analysing a
            # resampled copy, at a seventh of the cost).
            if factor == 1.0:
                ts, fs = t, f
            else:
                ts = np.round(t * factor).astype(np.int32)
                fs = (np.round((f + lo) / factor) - lo).astype(np.int32)
                order = np.lexsort((fs, ts))
                ts, fs = ts[order], fs[order]
            hashes, times = _pair(ts, fs, self.cfg)
            fp = Fingerprint(hashes, times, base.shape[0] / float(self.cfg.sample_rate_hz), frame_seconds(self.cfg))
            for m in self.match(fp, max_results=max_results, speed=factor, exclude_track_ids=exclude_track_ids):
                if m.track_id not in best or m.aligned_hits > best[m.track_id].aligned_hits:
                    best[m.track_id] = m
        ranked = sorted(best.values(), key=lambda m: (-m.aligned_hits, m.track_id))[:max_results]
        return _decide(ranked, self.cfg)

    # ----------------------------------------------------------------------- files

    def save(self, directory: str | os.PathLike) -> list[str]:
        """Write the index into ``directory`` (the clip index's) and list it in its manifest.

        Returns the file names written. The manifest's checksums then cover these files too, so
        :meth:`soundalike.index.ClipIndex.load` verifies them.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / HASHES_FILE, self.hashes, allow_pickle=False)
        np.save(directory / ROWS_FILE, self.rows, allow_pickle=False)
        np.save(directory / TIMES_FILE, self.times, allow_pickle=False)
        (directory / TRACKS_FILE).write_text(json.dumps({
            "track_ids": [str(t) for t in self.track_ids], "durations_s": self.durations_s.tolist(),
        }))
        names = [HASHES_FILE, ROWS_FILE, TIMES_FILE, TRACKS_FILE]
        from soundalike.index import record_checksums

        record_checksums(directory, names, fingerprint={
            "format_version": FORMAT_VERSION, "settings": _settings(self.cfg),
            "entries": len(self), "tracks": int(self.track_ids.size)})
        return names

    @classmethod
    def load(cls, directory: str | os.PathLike, *, verify: bool = True) -> "FingerprintIndex | None":
        """Load the index saved in ``directory``; ``None`` when it holds none.

        Raises
        ------
        ModelWeightsError
            A file missing or not matching its checksum, or an unknown format.
        """
        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            return None
        manifest = json.loads(manifest_path.read_text())
        info = manifest.get("fingerprint")
        if info is None:
            return None
        if info.get("format_version") != FORMAT_VERSION:
            raise ModelWeightsError(f"{manifest_path}: unsupported fingerprint format {info.get('format_version')!r}")
        for name in (HASHES_FILE, ROWS_FILE, TIMES_FILE, TRACKS_FILE):
            path = directory / name
            if not path.is_file() or (verify and sha256_file(path) != manifest["sha256"].get(name)):
                raise ModelWeightsError(f"fingerprint file {path} is missing or does not match its checksum; "
                                        "rebuild the index")
        cfg = FingerprintConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["settings"].items()})
        tracks = json.loads((directory / TRACKS_FILE).read_text())
        index = cls(np.asarray(tracks["track_ids"], dtype=object), np.asarray(tracks["durations_s"], np.float64),
                    np.load(directory / HASHES_FILE, allow_pickle=False),
                    np.load(directory / ROWS_FILE, allow_pickle=False),
                    np.load(directory / TIMES_FILE, allow_pickle=False), cfg)
        if not (index.hashes.shape == index.rows.shape == index.times.shape) or (
                index.rows.size and int(index.rows.max()) >= index.track_ids.size):
            raise ModelWeightsError(f"fingerprint index at {directory} is inconsistent; rebuild the index")
        return index


def _decide(ranked: list[FingerprintMatch], cfg: FingerprintConfig) -> list[FingerprintMatch]:
    """Mark matches confident: enough aligned hits, comparable to the leader's, clear of the background,
    and a peak that stands out of the track's own matches (``min_peak_share``).

    The background is the best match below ``1 / min_margin`` of the leader's hits. Matches
    between it and the leader are all confident when clear of it: a catalogue may hold the same
    recording twice (a re-encode), and an excerpt of it then matches both.
    """
    if not ranked:
        return ranked
    top = ranked[0].aligned_hits
    background = max((m.aligned_hits for m in ranked if m.aligned_hits * cfg.min_margin < top), default=0)
    return [
        replace(m, confident=bool(
            m.aligned_hits >= cfg.min_aligned_hits and m.aligned_hits * cfg.min_margin >= top
            and m.aligned_hits >= cfg.min_margin * background
            and m.aligned_hits >= cfg.min_peak_share * m.matched_hashes))
        for m in ranked
    ]


def _settings(cfg: FingerprintConfig) -> dict:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def build_fingerprint_index(sources: Mapping[str, AudioSource], cfg: FingerprintConfig, *,
                            progress: bool = False) -> FingerprintIndex:
    """Decode and fingerprint every ``{track_id: path}``; files that fail are left out with a warning.

    Decoding is at ``cfg.sample_rate_hz`` (8 kHz), so a track costs a fraction of its embedding.
    """
    from tqdm import tqdm

    fps: dict[str, Fingerprint] = {}
    for tid, source in tqdm(list(sources.items()), desc="fingerprints", unit="track", disable=not progress):
        try:
            fps[tid] = fingerprint_source(source, cfg)
        except AudioDecodeError as exc:
            warnings.warn(f"fingerprint index: left out {describe_source(source)}: {exc}", stacklevel=2)
    return FingerprintIndex.from_fingerprints(fps, cfg)
