"""The one decode → chunk → flag → embed path, shared by the batch job and the query model.

:func:`extract_track` is what the Spark embed stage runs per catalogue file and what the query
model runs on a query; both pass the same :class:`~soundalike.config.ClipsConfig` and the same
embedder, so a query clip and a catalogue clip are computed by identical code.

Long files are decoded window by window (``window_s`` at a time), so memory stays bounded
for a two-hour recording.

When the embedder is the CPU ``mel`` embedder at the default analysis (``n_fft`` 2048, hop 1024
at 22.05 kHz, the frames the flags use), each batch's power spectrogram is computed once and
shared by the flags and the embedder; the vectors are the ones ``embedder.embed`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from soundalike.audio import AudioSource, load_audio, probe_audio
from soundalike.clips import chunk, clip_starts
from soundalike.config import ClipsConfig
from soundalike.embedders.base import Embedder
from soundalike.embedders.mel import MelEmbedder
from soundalike.errors import ParameterError
from soundalike.features import stft_power
from soundalike.flags import analysis_frame, clip_flags


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
    if abs(embedder.clip_s - clips_cfg.clip_s) > 1e-9:
        raise ParameterError(
            f"embedder {embedder.name} was built for {embedder.clip_s} s clips, config says {clips_cfg.clip_s} s"
        )
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
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
            flags = clip_flags(
                audio,
                sr,
                silence_rms_db=clips_cfg.silence_rms_db,
                noise_flatness=clips_cfg.noise_flatness,
                noise_tonality_max=clips_cfg.noise_tonality_max,
                real_samples=real[i : i + batch_size],
                power=power,
            )
            vectors = embedder.embed(audio) if power is None else embedder.embed_power(power)
            bounds = slice(i, i + batch_size)
            parts.append((clips.start_s[bounds] + offset_s, clips.end_s[bounds] + offset_s, flags, vectors))
    if not parts:
        return TrackClips(
            start_s=np.zeros(0), end_s=np.zeros(0), rms_db=np.zeros(0, np.float32),
            is_silent=np.zeros(0, bool), is_noise=np.zeros(0, bool),
            vectors=np.zeros((0, embedder.dim), np.float32), duration_s=duration_s,
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
