"""Pairwise comparison of two tracks: frame-wise cosine similarity of log-mel spectrograms.

The method: decode both tracks to mono at one sample rate, take at most a fixed duration of
each (a shorter track is compared over its own length, never padded), compute log-mel
spectrograms in dB, normalise each spectrogram to zero mean and unit variance, and take the
cosine similarity of each pair of time-aligned frames of real audio; the score is the mean over
frames, and the per-frame values are the timeline.

Beyond the plain method, ``align=True`` searches the time offset of B against A that maximises
the mean cosine (cross-correlation of the normalised frames via FFT, so whole tracks stay cheap)
and compares at that offset, normalising over the overlapping frames only, so a take that
starts 2 s late still scores high.

Examples
--------
>>> result = compare_files("a.wav", "b.mp3", seconds=15, align=True)  # doctest: +SKIP
>>> round(result.mean_cosine, 3), result.offset_s  # doctest: +SKIP
(0.982, 2.009)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from soundalike.audio import AudioSource, load_audio
from soundalike.errors import ParameterError
from soundalike.features import MelParams, log_mel

#: The reference method's analysis settings (n_fft 2048, hop 512, 128 mels). The bands stop at
#: 16 kHz: lossy codecs low-pass between 16 and 19 kHz depending on bitrate, and above that the
#: dB floor of an mp3 against the faint air of its wav source would make one recording look
#: like two (0.92 instead of 0.99 on a default-quality mp3). ``--fmax`` changes it.
COMPARE_MEL = MelParams(n_fft=2048, hop_length=512, n_mels=128, fmax_hz=16000.0)


@dataclass(frozen=True)
class Comparison:
    """The result of comparing track A with track B.

    Attributes
    ----------
    mean_cosine : float
        Mean over compared frames of the frame-wise cosine similarity, in [-1, 1].
    frames : int
        Number of compared (overlapping) frames.
    offset_s : float
        Where B's content sits relative to A's: B at time ``t + offset_s`` matches A at ``t``
        (positive: B starts later). 0 unless ``align`` was asked for.
    timeline : np.ndarray [shape=(frames,), dtype=float32]
        Cosine similarity of each compared frame pair.
    times_s : np.ndarray [shape=(frames,), dtype=float64]
        Time in A of each compared frame.
    mel_a, mel_b : np.ndarray [shape=(n_mels, frames_a|frames_b), dtype=float32]
        The two log-mel spectrograms in dB (before normalisation), for plotting.
    sample_rate_hz : int
    hop_length : int
    """

    mean_cosine: float
    frames: int
    offset_s: float
    timeline: np.ndarray
    times_s: np.ndarray
    mel_a: np.ndarray
    mel_b: np.ndarray
    sample_rate_hz: int
    hop_length: int

    def to_json(self) -> dict:
        """The ``--json`` form: ``{"mean_cosine", "frames", "offset_s", "timeline"}``."""
        return {
            "mean_cosine": _json_number(self.mean_cosine, 6),
            "frames": int(self.frames),
            "offset_s": round(float(self.offset_s), 4),
            "frame_hop_s": self.hop_length / self.sample_rate_hz,
            "timeline": [_json_number(v, 5) for v in self.timeline],
        }


def _json_number(value: float, digits: int) -> float | None:
    """``value`` rounded, or None (JSON null) where it is not finite: bare NaN is not JSON."""
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def compare_files(
    a: AudioSource,
    b: AudioSource,
    *,
    seconds: float = 15.0,
    sr: int = 44100,
    align: bool = False,
    max_offset_s: float | None = None,
    params: MelParams = COMPARE_MEL,
    start_a_s: float = 0.0,
    start_b_s: float = 0.0,
) -> Comparison:
    """Decode two tracks and :func:`compare_waves` them.

    Parameters
    ----------
    a, b : path or bytes
    seconds : float
        Compare at most ``seconds`` of each track; ``0`` compares the whole tracks. A shorter
        track is not padded: only frames of real audio in both are compared (padding frames
        would match each other perfectly and inflate the score), and with ``align`` the
        overlap rule counts its real length.
    sr : int
        Sample rate both are decoded at, Hz.
    align, max_offset_s, params
        See :func:`compare_waves`.
    start_a_s, start_b_s : float
        Where in each track the compared stretch starts, seconds (e.g. a matched clip's start).
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ParameterError(f"seconds must be a number >= 0 (0 = whole track), got {seconds}")
    for name, start in (("start_a_s", start_a_s), ("start_b_s", start_b_s)):
        if not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
            raise ParameterError(f"{name} (where the compared stretch starts) must be a finite number of "
                                 f"seconds >= 0, got {start!r}")
    duration = seconds if seconds > 0 else None
    wave_a = load_audio(a, sr, offset_s=start_a_s, duration_s=duration)
    wave_b = load_audio(b, sr, offset_s=start_b_s, duration_s=duration)
    if duration is not None:
        n = int(round(duration * sr))
        wave_a, wave_b = wave_a[:n], wave_b[:n]
    return compare_waves(wave_a, wave_b, sr, align=align, max_offset_s=max_offset_s, params=params)


def compare_waves(
    wave_a: np.ndarray,
    wave_b: np.ndarray,
    sr: int,
    *,
    align: bool = False,
    max_offset_s: float | None = None,
    min_overlap: float = 0.5,
    params: MelParams = COMPARE_MEL,
) -> Comparison:
    """Frame-wise mel cosine similarity of two mono waves at the same sample rate.

    Parameters
    ----------
    wave_a, wave_b : np.ndarray [shape=(n,), dtype=float32]
    sr : int
        Sample rate in Hz.
    align : bool
        Search the offset of B against A that maximises the mean cosine.
    max_offset_s : float or None
        Largest offset searched, seconds; ``None`` (or infinity) allows any offset that keeps
        ``min_overlap`` of the shorter track overlapping.
    min_overlap : float
        Smallest fraction (0, 1] of the shorter spectrogram's frames that must overlap.
    params : MelParams
    """
    if not 0 < min_overlap <= 1:
        raise ParameterError(f"min_overlap must be in (0, 1], got {min_overlap}")
    if max_offset_s is not None and (math.isnan(max_offset_s) or max_offset_s < 0):
        raise ParameterError(f"max_offset_s must be a number >= 0, got {max_offset_s}")
    if max_offset_s is not None and math.isinf(max_offset_s):
        max_offset_s = None
    for name, wave in (("wave_a", wave_a), ("wave_b", wave_b)):
        if wave.size and not np.isfinite(wave).all():
            raise ParameterError(f"{name} holds NaN or infinite samples; decode it with load_audio, which refuses them")
    mel_a = log_mel(wave_a, sr, params).numpy()
    mel_b = log_mel(wave_b, sr, params).numpy()
    unit_a, unit_b = _unit_frames(mel_a), _unit_frames(mel_b)
    n_a, n_b = unit_a.shape[1], unit_b.shape[1]

    lag = 0
    if align:
        max_lag = None if max_offset_s is None else int(np.floor(max_offset_s * sr / params.hop_length))
        lag = _best_lag(unit_a, unit_b, min_overlap=min_overlap, max_lag=max_lag)
    a0, b0 = max(0, -lag), max(0, lag)
    frames = min(n_a - a0, n_b - b0)
    if align:
        # Normalise over the overlap only: the part of B before its content (a late start's
        # silence) must not shift B's mean and so bias every frame.
        unit_a = _unit_frames(mel_a[:, a0 : a0 + frames])
        unit_b = _unit_frames(mel_b[:, b0 : b0 + frames])
        a0 = b0 = 0
    timeline = np.einsum("mt,mt->t", unit_a[:, a0 : a0 + frames], unit_b[:, b0 : b0 + frames])
    times_s = (max(0, -lag) + np.arange(frames)) * params.hop_length / sr
    return Comparison(
        mean_cosine=float(timeline.mean()),
        frames=int(frames),
        offset_s=lag * params.hop_length / sr,
        timeline=timeline.astype(np.float32),
        times_s=times_s,
        mel_a=mel_a,
        mel_b=mel_b,
        sample_rate_hz=int(sr),
        hop_length=params.hop_length,
    )


def _unit_frames(mel_db: np.ndarray) -> np.ndarray:
    """Z-score the whole spectrogram, then scale each frame (column) to unit length."""
    z = (mel_db - mel_db.mean()) / (mel_db.std() + 1e-8)
    return z / (np.linalg.norm(z, axis=0, keepdims=True) + 1e-8)


def _best_lag(unit_a: np.ndarray, unit_b: np.ndarray, *, min_overlap: float, max_lag: int | None) -> int:
    """Frame lag L maximising mean_t <a_t, b_{t+L}> over the overlap."""
    n_a, n_b = unit_a.shape[1], unit_b.shape[1]
    # Full cross-correlation, summed over mel bands: index k holds lag k - (n_a - 1).
    corr = fftconvolve(unit_b, unit_a[:, ::-1], mode="full", axes=1).sum(axis=0)
    lags = np.arange(-(n_a - 1), n_b)
    overlap = np.minimum(n_a, n_b - lags) - np.maximum(0, -lags)
    overlap = np.minimum(overlap, np.minimum(n_a, n_b))
    ok = overlap >= max(1, int(np.ceil(min_overlap * min(n_a, n_b))))
    if max_lag is not None:
        ok &= np.abs(lags) <= max_lag
    score = np.where(ok, corr / np.maximum(overlap, 1), -np.inf)
    return int(lags[int(np.argmax(score))])


def plot_path(path: str | Path) -> Path:
    """The PNG file :func:`plot_comparison` writes for ``path``: ``.png`` is added to a name without one.

    Raises
    ------
    ParameterError
        ``path`` is a directory or ends in another suffix than ``.png``.
    """
    path = Path(path)
    if path.is_dir():
        raise ParameterError(f"the plot path {path} is a directory; name a .png file")
    if not path.suffix:
        return path.with_name(path.name + ".png")
    if path.suffix.lower() != ".png":
        raise ParameterError(f"the plot is a PNG: name a .png file, got {str(path)!r}")
    return path


def plot_comparison(
    result: Comparison,
    path: str | Path,
    *,
    label_a: str = "A",
    label_b: str = "B",
) -> Path:
    """Write a PNG: both mel spectrograms side by side, the similarity curve under them.

    Returns the path written (``path``, with ``.png`` added when it has no suffix).

    Raises
    ------
    ParameterError
        ``path`` names no PNG (see :func:`plot_path`), or it cannot be written.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in servers

    path = plot_path(path)
    fig = Figure(figsize=(13, 7), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
    hop_s = result.hop_length / result.sample_rate_hz
    vmin = float(min(result.mel_a.min(), result.mel_b.min()))
    vmax = float(max(result.mel_a.max(), result.mel_b.max()))
    for col, (mel, label) in enumerate(((result.mel_a, label_a), (result.mel_b, label_b))):
        ax = fig.add_subplot(grid[0, col])
        image = ax.imshow(
            mel,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=vmin,
            vmax=vmax,
            extent=(0.0, mel.shape[1] * hop_s, 0, mel.shape[0]),
            interpolation="nearest",
        )
        ax.set_title(_short(label))
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mel band")
        fig.colorbar(image, ax=ax, label="power (dB)")
    ax = fig.add_subplot(grid[1, :])
    ax.plot(result.times_s, result.timeline, lw=0.8, color="tab:blue", label="frame cosine")
    ax.axhline(result.mean_cosine, color="tab:red", ls="--", lw=1,
               label=f"mean {result.mean_cosine:.3f}")
    ax.set_ylim(min(-0.05, float(result.timeline.min()) - 0.05), 1.05)
    ax.set_xlabel("time in A (s)")
    ax.set_ylabel("cosine similarity")
    offset = f", B offset {result.offset_s:+.2f} s" if result.offset_s else ""
    ax.set_title(f"frame-wise mel cosine similarity ({result.frames} frames{offset})")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, format="png")
    except OSError as exc:
        raise ParameterError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None
    return path


def _short(label: str, limit: int = 60) -> str:
    # A file name that is not valid UTF-8 holds surrogate escapes, which fonts cannot draw.
    label = label.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return label if len(label) <= limit else "…" + label[-(limit - 1):]
