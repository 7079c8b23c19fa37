"""Cut a wave into fixed-length clips: the unit that is embedded, indexed and matched.

Policy for the end of a track
-----------------------------
Clips start at ``0, hop_s, 2*hop_s, ...`` while a full ``clip_s`` fits. What is left after
the last full clip (the *tail*) becomes one more clip, zero-padded to ``clip_s``, only when it
is at least ``min_tail_s`` long; otherwise it is dropped. The tail clip starts at the next hop
position, so with overlapping clips it also repeats some already-covered audio. A track shorter than ``clip_s`` is
one padded clip if it is at least ``min_tail_s`` long, else it yields no clip at all.
``end_s`` is always the end of the real audio inside the clip, never of the padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from soundalike.errors import ParameterError


@dataclass(frozen=True)
class Clips:
    """Fixed-length clips cut from one wave.

    Attributes
    ----------
    audio : np.ndarray [shape=(n_clips, clip_samples), dtype=float32]
    start_s : np.ndarray [shape=(n_clips,), dtype=float64]
        Start of each clip in the source, seconds.
    end_s : np.ndarray [shape=(n_clips,), dtype=float64]
        End of the real (unpadded) audio of each clip in the source, seconds.
    sample_rate_hz : int
    """

    audio: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    sample_rate_hz: int

    def __len__(self) -> int:
        return int(self.audio.shape[0])


def clip_starts(duration_s: float, *, clip_s: float, hop_s: float, min_tail_s: float) -> np.ndarray:
    """Start times (seconds) of the clips :func:`chunk` cuts from ``duration_s`` of audio.

    Cheap and decode-free, so a manifest of clips can be planned from a file's header.
    """
    _check_policy(clip_s, hop_s, min_tail_s)
    n_full = int(np.floor((duration_s - clip_s) / hop_s + 1e-9)) + 1 if duration_s >= clip_s else 0
    starts = [i * hop_s for i in range(n_full)]
    covered_to = starts[-1] + clip_s if starts else 0.0
    if duration_s - covered_to >= min_tail_s - 1e-9:
        starts.append(n_full * hop_s)
    return np.round(np.asarray(starts, dtype=np.float64), 6)


def chunk(
    wave: np.ndarray,
    sr: int,
    *,
    clip_s: float = 10.0,
    hop_s: float | None = None,
    min_tail_s: float | None = None,
) -> Clips:
    """Cut ``wave`` into clips of ``clip_s`` seconds every ``hop_s`` seconds.

    Parameters
    ----------
    wave : np.ndarray [shape=(n,), dtype=float32]
        Mono audio.
    sr : int
        Sample rate of ``wave`` in Hz.
    clip_s : float
        Clip length in seconds.
    hop_s : float or None
        Distance between clip starts; defaults to ``clip_s`` (no overlap). ``hop_s < clip_s``
        makes overlapping clips.
    min_tail_s : float or None
        Shortest tail kept as a zero-padded last clip; defaults to ``clip_s / 2``.

    Returns
    -------
    Clips
        Possibly empty (``len(clips) == 0``) when the wave is shorter than ``min_tail_s``.
    """
    hop_s = clip_s if hop_s is None else hop_s
    min_tail_s = clip_s / 2 if min_tail_s is None else min_tail_s
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ParameterError(f"wave must be mono with shape (n,), got shape {wave.shape}")
    if not np.issubdtype(wave.dtype, np.floating):
        raise ParameterError(f"wave must be floating-point, got {wave.dtype}")
    if sr <= 0:
        raise ParameterError(f"sr must be positive, got {sr}")
    duration_s = wave.shape[0] / sr
    starts = clip_starts(duration_s, clip_s=clip_s, hop_s=hop_s, min_tail_s=min_tail_s)
    clip_samples = int(round(clip_s * sr))
    audio = np.zeros((len(starts), clip_samples), dtype=np.float32)
    ends = np.zeros(len(starts), dtype=np.float64)
    for i, start_s in enumerate(starts):
        a = int(round(start_s * sr))
        piece = wave[a : a + clip_samples]
        audio[i, : piece.shape[0]] = piece
        ends[i] = (a + piece.shape[0]) / sr
    return Clips(audio=audio, start_s=starts, end_s=np.round(ends, 6), sample_rate_hz=int(sr))


def _check_policy(clip_s: float, hop_s: float, min_tail_s: float) -> None:
    if not clip_s > 0:
        raise ParameterError(f"clip_s must be > 0 seconds, got {clip_s}")
    if not 0 < hop_s:
        raise ParameterError(f"hop_s must be > 0 seconds, got {hop_s}")
    if hop_s > clip_s:
        raise ParameterError(f"hop_s ({hop_s}) must not exceed clip_s ({clip_s}): audio would be skipped")
    if not 0 < min_tail_s <= clip_s:
        raise ParameterError(f"min_tail_s must be in (0, clip_s={clip_s}], got {min_tail_s}")
