"""The one decode → chunk → flag → embed path, shared by the batch job and the query model.

:func:`extract_track` is what the Spark embed stage runs per catalogue file and what the query
model runs on a query; both pass the same :class:`~soundalike.config.ClipsConfig` and the same
embedder, so a query clip and a catalogue clip are computed by identical code.

Long files are decoded window by window (``window_s`` at a time), so memory stays bounded
for a two-hour recording.

When the embedder is the CPU ``mel`` embedder at the default analysis (``n_fft`` 2048, hop 1024
at 22.05 kHz, the frames the flags use), each batch's power spectrogram is computed once and
shared by the flags and the embedder; the vectors are the ones ``embedder.embed`` gives.

:func:`extract_tracks` runs the same steps over many files for an embedder on a GPU: a pool of
decode threads reads, resamples and cuts the next files while the GPU embeds, clips of several
files share a batch (so short files still fill batches), batches are staged in pinned host memory
and copied asynchronously, and the flags' spectrogram is computed on the GPU too. Its results are
the ones :func:`extract_track` gives for each file (up to float rounding of the device).
"""

from __future__ import annotations

import collections
import contextlib
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from soundalike.audio import AudioSource, describe_source, load_audio, probe_audio
from soundalike.clips import chunk, clip_starts
from soundalike.config import ClipsConfig
from soundalike.embedders.base import Embedder
from soundalike.embedders.mel import MelEmbedder
from soundalike.errors import AudioDecodeError, ParameterError
from soundalike.features import stft_power
from soundalike.flags import analysis_frame, clip_flags
from soundalike.resample import DeviceResampler


@dataclass(frozen=True)
class TrackClips:
    """Clips of one track with their flags and vectors.

    Attributes
    ----------
    start_s, end_s : np.ndarray [shape=(n,), dtype=float64]
        Clip bounds in the track, seconds (``end_s`` excludes padding).
    rms_db : np.ndarray [shape=(n,), dtype=float32]
        Level of the real audio of each clip, dBFS.
    is_silent, is_noise : np.ndarray [shape=(n,), dtype=bool]
    vectors : np.ndarray [shape=(n, dim), dtype=float32]
        Unit-norm embeddings.
    duration_s : float
        Decoded length of the track (or of the part read).
    """

    start_s: np.ndarray
    end_s: np.ndarray
    rms_db: np.ndarray
    is_silent: np.ndarray
    is_noise: np.ndarray
    vectors: np.ndarray
    duration_s: float

    def __len__(self) -> int:
        return int(self.start_s.shape[0])

    @property
    def indexable(self) -> np.ndarray:
        """bool [n]: clips that are neither silent nor noise."""
        return ~(self.is_silent | self.is_noise)


def clip_policy(cfg: ClipsConfig) -> str:
    """A short string naming the clip policy, stored with every clip (``"10/10/5"``)."""
    return f"{cfg.clip_s:g}/{cfg.hop_s:g}/{cfg.min_tail_s:g}"


def flags_policy(cfg: ClipsConfig) -> str:
    """A short string naming the flag thresholds (``"-50/0.3/0.25"``: silence dBFS, noise
    flatness, noise tonality), so that stored flags can be told from ones of other settings."""
    return f"{cfg.silence_rms_db:g}/{cfg.noise_flatness:g}/{cfg.noise_tonality_max:g}"


def extract_track(
    source: AudioSource,
    embedder: Embedder,
    clips_cfg: ClipsConfig,
    *,
    batch_size: int = 32,
    max_seconds: float | None = None,
    window_s: float = 600.0,
) -> TrackClips:
    """Decode ``source``, cut it into clips, flag silence/noise and embed every clip.

    Parameters
    ----------
    source : path or bytes
    embedder : Embedder
        Its ``sample_rate_hz`` is the decode rate; its ``clip_s`` must equal ``clips_cfg.clip_s``.
    clips_cfg : ClipsConfig
        Clip policy and flag thresholds.
    batch_size : int
        Clips per ``embedder.embed`` call.
    max_seconds : float or None
        Read at most this much of the source (queries); ``None`` reads it all.
    window_s : float
        Longest stretch decoded at once, seconds.

    Returns
    -------
    TrackClips
        Possibly with zero clips (audio shorter than ``clips_cfg.min_tail_s``).

    Raises
    ------
    AudioDecodeError
        If the source cannot be decoded.
    """
    _check_args(embedder, clips_cfg, batch_size)
    sr = embedder.sample_rate_hz
    shared_frame = _shared_frame(embedder, sr)
    parts = []
    duration_s = 0.0
    for offset_s, wave in _windows(source, sr, clips_cfg, max_seconds=max_seconds, window_s=window_s):
        clips = chunk(wave, sr, clip_s=clips_cfg.clip_s, hop_s=clips_cfg.hop_s, min_tail_s=clips_cfg.min_tail_s)
        duration_s = max(duration_s, offset_s + wave.shape[0] / sr)
        real = np.round((clips.end_s - clips.start_s) * sr).astype(np.int64)
        for i in range(0, len(clips), batch_size):
            audio = clips.audio[i : i + batch_size]
            power = None
            if shared_frame is not None:
                n_fft, hop = shared_frame
                power = stft_power(torch.from_numpy(audio), n_fft=n_fft, hop_length=hop)
            flags = _flags(audio, sr, clips_cfg, real[i : i + batch_size], power)
            vectors = embedder.embed(audio) if power is None else embedder.embed_power(power)
            bounds = slice(i, i + batch_size)
            parts.append((clips.start_s[bounds] + offset_s, clips.end_s[bounds] + offset_s, flags, vectors))
    return _assemble(parts, embedder.dim, duration_s)


def _check_args(embedder: Embedder, clips_cfg: ClipsConfig, batch_size: int) -> None:
    if abs(embedder.clip_s - clips_cfg.clip_s) > 1e-9:
        raise ParameterError(
            f"embedder {embedder.name} was built for {embedder.clip_s} s clips, config says {clips_cfg.clip_s} s"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _flags(audio: np.ndarray, sr: int, cfg: ClipsConfig, real: np.ndarray, power: torch.Tensor | None):
    return clip_flags(
        audio, sr, silence_rms_db=cfg.silence_rms_db, noise_flatness=cfg.noise_flatness,
        noise_tonality_max=cfg.noise_tonality_max, real_samples=real, power=power, decisive_only=True,
    )


def _assemble(parts: list, dim: int, duration_s: float) -> TrackClips:
    """One :class:`TrackClips` from ``(start_s, end_s, flags, vectors)`` pieces in clip order."""
    if not parts:
        return TrackClips(
            start_s=np.zeros(0), end_s=np.zeros(0), rms_db=np.zeros(0, np.float32),
            is_silent=np.zeros(0, bool), is_noise=np.zeros(0, bool),
            vectors=np.zeros((0, dim), np.float32), duration_s=duration_s,
        )
    return TrackClips(
        start_s=np.round(np.concatenate([p[0] for p in parts]), 6),
        end_s=np.round(np.concatenate([p[1] for p in parts]), 6),
        rms_db=np.concatenate([p[2].rms_db for p in parts]).astype(np.float32),
        is_silent=np.concatenate([p[2].is_silent for p in parts]),
        is_noise=np.concatenate([p[2].is_noise for p in parts]),
        vectors=np.concatenate([p[3] for p in parts]).astype(np.float32),
        duration_s=duration_s,
    )


def _shared_frame(embedder: Embedder, sr: int) -> tuple[int, int] | None:
    """``(n_fft, hop_length)`` when ``embedder`` can reuse the flags' power spectrogram, else None.

    Only the CPU ``mel`` embedder analysing with the flags' own frame qualifies; on a GPU the
    embedder computes its spectrogram where it runs.
    """
    if not isinstance(embedder, MelEmbedder) or embedder.device.type != "cpu":
        return None
    frame = analysis_frame(sr)
    return frame if (embedder.params.n_fft, embedder.params.hop_length) == frame else None


def _windows(source: AudioSource, sr: int, cfg: ClipsConfig, *, max_seconds: float | None, window_s: float):
    """Yield ``(offset_s, wave)`` pieces whose clips together are the track's clips.

    Short sources (the usual case) are one piece. Longer ones are cut at clip starts, so every
    clip lies wholly inside one piece and no clip is cut twice.
    """
    total_s = probe_audio(source).duration_s
    if max_seconds is not None:
        total_s = min(total_s, max_seconds)
    if total_s <= window_s:
        yield 0.0, load_audio(source, sr, duration_s=max_seconds)
        return
    starts = clip_starts(total_s, clip_s=cfg.clip_s, hop_s=cfg.hop_s, min_tail_s=cfg.min_tail_s)
    per_window = max(1, int(window_s // cfg.hop_s))
    for first in range(0, len(starts), per_window):
        group = starts[first : first + per_window]
        offset = float(group[0])
        last = first + per_window >= len(starts)
        if last:
            length = None if max_seconds is None else max(max_seconds - offset, 1e-3)
        else:
            # Up to the end of the group's last clip; the next group starts at its own start.
            length = float(group[-1] - offset + cfg.clip_s)
        wave = load_audio(source, sr, offset_s=offset, duration_s=length)
        if not last:
            # Keep only the group's clips: cut so chunk() sees exactly len(group) full clips.
            wave = wave[: int(round((group[-1] - offset + cfg.clip_s) * sr))]
        yield offset, wave


# --------------------------------------------------------------------------- many files, GPU


def extract_tracks(
    sources: Iterable[AudioSource],
    embedder: Embedder,
    clips_cfg: ClipsConfig,
    *,
    batch_size: int = 32,
    decode_workers: int = 0,
    window_s: float = 600.0,
    time_limit_s: float | None = None,
    resample_on_device: bool = False,
) -> Iterator[tuple[int, "TrackClips | Exception"]]:
    """:func:`extract_track` over many files, decoding ahead while the embedder works.

    Parameters
    ----------
    sources : iterable of path or bytes
    embedder, clips_cfg, batch_size, window_s
        As for :func:`extract_track`; a batch may hold clips of several files.
    decode_workers : int
        Threads that decode, resample and cut the files ahead of the embedder (at most
        ``2 * decode_workers`` files ahead). ``0`` runs :func:`extract_track` on each file in
        turn, which is what a CPU embedder wants (there the decoding competes for the same cores).
    time_limit_s : float or None
        A file that takes longer than this yields an :class:`~soundalike.errors.AudioDecodeError`
        instead of holding up the rest (``catalogue.decode_timeout_s``). In turn, the limit
        covers the file's whole extraction and is enforced by ``SIGALRM`` when running in the
        main thread (Spark's Python workers do); with decode threads it bounds the wait for the
        file's decode, and a decoder that never returns is abandoned in its thread.
    resample_on_device : bool
        With decode threads, resample on the embedder's device
        (:class:`~soundalike.resample.DeviceResampler`) instead of with soxr in the threads.

    Yields
    ------
    (i, TrackClips or Exception)
        In the order of ``sources``; a file that cannot be decoded yields its exception
        (normally :class:`~soundalike.errors.AudioDecodeError`) instead of stopping the others.
        An error of the embedder on a batch shared by several files (running out of GPU memory,
        say) is raised.

    Raises
    ------
    ParameterError
        Bad ``batch_size`` / ``decode_workers``, or a ``clips_cfg`` the embedder was not built for.

    Notes
    -----
    Files longer than ``window_s`` are not decoded ahead (their clips would not fit in bounded
    memory); the embedder's pending clips are flushed and the file goes through
    :func:`extract_track` window by window.
    """
    _check_args(embedder, clips_cfg, batch_size)
    if isinstance(decode_workers, bool) or not isinstance(decode_workers, int) or decode_workers < 0:
        raise ParameterError(f"decode_workers must be an integer >= 0, got {decode_workers!r}")
    sr = embedder.sample_rate_hz
    if decode_workers == 0 or _shared_frame(embedder, sr) is not None:
        for i, source in enumerate(sources):
            try:
                with _time_limit(time_limit_s, source):
                    result = extract_track(source, embedder, clips_cfg, batch_size=batch_size, window_s=window_s)
                yield i, result
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                yield i, exc
        return
    batcher = _CrossTrackBatcher(embedder, clips_cfg, batch_size)
    resample = DeviceResampler(batcher.device) if resample_on_device else None
    pending: collections.deque = collections.deque()  # (i, source, future) in input order
    done: dict[int, "TrackClips | Exception"] = {}
    order: collections.deque = collections.deque()  # indices not yet yielded
    iterator = enumerate(sources)
    pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="soundalike-decode")
    try:

        def refill() -> None:
            while len(pending) < 2 * decode_workers:
                nxt = next(iterator, None)
                if nxt is None:
                    return
                i, source = nxt
                order.append(i)
                pending.append((i, source, pool.submit(_decode_track, source, sr, clips_cfg, window_s, resample)))

        refill()
        while pending:
            i, source, future = pending.popleft()
            refill()
            try:
                decoded = future.result(timeout=time_limit_s)
            except FuturesTimeout:
                future.cancel()
                done[i] = AudioDecodeError(describe_source(source), _timeout_reason(time_limit_s))
                decoded = False
            except Exception as exc:  # noqa: BLE001
                done[i] = exc
                decoded = False
            if decoded is None:  # too long to hold: flush, then window by window
                batcher.flush(done)
                try:
                    with _time_limit(time_limit_s, source):
                        done[i] = extract_track(source, embedder, clips_cfg, batch_size=batch_size, window_s=window_s)
                except Exception as exc:  # noqa: BLE001
                    done[i] = exc
            elif decoded is not False:  # False: its error is already in done
                batcher.add(i, decoded, done)
            while order and order[0] in done:
                j = order.popleft()
                yield j, done.pop(j)
        batcher.flush(done)
        while order:
            j = order.popleft()
            yield j, done.pop(j)
    finally:  # never wait for a decoder that hangs
        pool.shutdown(wait=False, cancel_futures=True)


def _timeout_reason(seconds: float) -> str:
    return f"decoding took longer than catalogue.decode_timeout_s={seconds:g} s; file skipped"


class _Timeout(BaseException):
    """Raised by the alarm inside :func:`_time_limit` (BaseException: no ``except Exception`` eats it)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None, source: AudioSource):
    """Raise AudioDecodeError when the block runs longer than ``seconds`` (main thread only)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Timeout:
        raise AudioDecodeError(describe_source(source), _timeout_reason(seconds)) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class _Decoded:
    """A file's clips, cut but not yet embedded (what a decode thread hands over)."""

    audio: np.ndarray  # [n, clip_samples] float32
    start_s: np.ndarray
    end_s: np.ndarray
    real: np.ndarray  # real (unpadded) samples per clip
    duration_s: float


def _decode_track(source: AudioSource, sr: int, cfg: ClipsConfig, window_s: float, resample=None) -> _Decoded | None:
    """Decode and cut one file in a worker thread; None when it is longer than ``window_s``."""
    if probe_audio(source).duration_s > window_s:
        return None
    wave = load_audio(source, sr, resample=resample)
    clips = chunk(wave, sr, clip_s=cfg.clip_s, hop_s=cfg.hop_s, min_tail_s=cfg.min_tail_s)
    real = np.round((clips.end_s - clips.start_s) * sr).astype(np.int64)
    return _Decoded(np.ascontiguousarray(clips.audio, dtype=np.float32), clips.start_s, clips.end_s, real,
                    wave.shape[0] / sr)


class _CrossTrackBatcher:
    """Fills embed batches with the clips of consecutive files; hands back each file when complete."""

    def __init__(self, embedder: Embedder, cfg: ClipsConfig, batch_size: int):
        self.embedder = embedder
        self.cfg = cfg
        self.batch_size = batch_size
        self.device = getattr(embedder, "device", torch.device("cpu"))
        self.queue: collections.deque = collections.deque()  # [i, decoded, next row]
        self.queued = 0
        self.results: dict[int, dict] = {}
        self.staging = None
        if self.device.type == "cuda":  # page-locked, so the copy to the GPU is asynchronous
            self.staging = torch.empty((batch_size, embedder.clip_samples), dtype=torch.float32, pin_memory=True)

    def add(self, i: int, decoded: _Decoded, done: dict) -> None:
        n = decoded.audio.shape[0]
        self.results[i] = {"decoded": decoded, "parts": [], "left": n}
        if n == 0:
            self._finish(i, done)
            return
        self.queue.append([i, decoded, 0])
        self.queued += n
        while self.queued >= self.batch_size:
            self._embed_one(done)

    def flush(self, done: dict) -> None:
        while self.queued:
            self._embed_one(done)

    def _embed_one(self, done: dict) -> None:
        take = min(self.batch_size, self.queued)
        pieces = []  # (i, rows slice)
        gathered = 0
        while gathered < take:
            entry = self.queue[0]
            i, decoded, row = entry
            stop = min(decoded.audio.shape[0], row + take - gathered)
            pieces.append((i, slice(row, stop)))
            gathered += stop - row
            entry[2] = stop
            if stop == decoded.audio.shape[0]:
                self.queue.popleft()
        self.queued -= take
        sr = self.embedder.sample_rate_hz
        batch = (self.staging.numpy()[:take] if self.staging is not None
                 else np.empty((take, self.embedder.clip_samples), np.float32))
        real = np.empty(take, np.int64)
        at = 0
        for i, rows in pieces:
            decoded = self.results[i]["decoded"]
            n = rows.stop - rows.start
            batch[at : at + n] = decoded.audio[rows]
            real[at : at + n] = decoded.real[rows]
            at += n
        power = None
        if self.device.type != "cpu":
            n_fft, hop = analysis_frame(sr)
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            with torch.inference_mode():
                power = stft_power(x, n_fft=n_fft, hop_length=hop)
        flags = _flags(batch, sr, self.cfg, real, power)
        vectors = self.embedder.embed(batch)
        at = 0
        for i, rows in pieces:
            n = rows.stop - rows.start
            state = self.results[i]
            d = state["decoded"]
            part_flags = _FlagSlice(flags, slice(at, at + n))
            state["parts"].append((d.start_s[rows], d.end_s[rows], part_flags, vectors[at : at + n]))
            state["left"] -= n
            at += n
            if state["left"] == 0:
                self._finish(i, done)

    def _finish(self, i: int, done: dict) -> None:
        state = self.results.pop(i)
        done[i] = _assemble(state["parts"], self.embedder.dim, state["decoded"].duration_s)


class _FlagSlice:
    """Rows ``rows`` of a batch's :class:`~soundalike.flags.ClipFlags`."""

    def __init__(self, flags, rows: slice):
        self.rms_db = flags.rms_db[rows]
        self.is_silent = flags.is_silent[rows]
        self.is_noise = flags.is_noise[rows]
