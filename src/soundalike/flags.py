"""Flag clips that are not music: silence, and broadband noise such as applause.

Three measures per clip, computed on a whole batch at once in torch from one STFT (a ~93 ms
Hann window, half overlap). The spectral measures are taken on every other frame of those that
lie wholly inside the clip -- back-to-back windows that cover the clip; the decision is per
clip, and the overlapping frames in between would double the work for the same statistics. The
STFT can be handed in (``power=``, see :func:`analysis_frame`), so the caller can share it
with an embedder that uses the same frames.

``rms_db``
    Level of the clip's real (unpadded) samples, dBFS (a full-scale sine is -3 dBFS).
``flatness``
    Spectral flatness -- geometric over arithmetic mean of the power spectrum -- between
    500 Hz and 8 kHz, the median over the clip's audible frames. The periodogram of white noise
    scores 0.56 (its bins are themselves random); applause 0.55-0.58; tonal music under 0.1;
    drum-heavy music 0.2-0.42, because hi-hats and snares are noise too. (Over 300 Hz-10 kHz
    the stop bands of band-limited applause count as "not flat": the sample catalogue's applause
    then scores 0.29, under the 0.30 default.)
``tonality``
    Fraction of audible frames holding at least one clear spectral peak between 40 Hz and
    5 kHz. The power is first averaged over 3 frames -- the measured frame and the overlapping
    ones either side (noise averages down, a sustained partial does not); a bin is a peak when
    it stands :data:`PEAK_PROMINENCE_DB` above the mean dB of its neighbours within +/-60 Hz
    (main lobe left out) *and* :data:`PEAK_ABOVE_MEAN_DB` above the frame's mean power in the
    band, so a faint hum under loud noise does not count. Noise
    and applause score 0-0.01 (their highest "peaks" stand 7-9 dB out); music with any pitched
    part -- a bass line, a kick drum's thump, a tom -- scores 0.15-1: 0.79 or more on every
    style of :mod:`soundalike.sample`, about 0.5 for a bare kick-snare-hat loop, 0.16 for the
    least tonal of 217 clips of real game soundtracks (whose flatness was 0.14).

A clip is *silent* when ``rms_db < silence_rms_db``; it is *noise* when it is not silent, its
flatness exceeds ``noise_flatness`` and its tonality is below ``noise_tonality_max``. Both
measures are needed: drum-heavy music is as flat as applause in many frames, and a tonal
hum can sit under applause.

Limits: percussion made only of unpitched noise (shakers and snares without toms, kick or
bass) looks exactly like applause to these measures and is flagged; what would tell them apart
is the regular pulse, which this module does not measure.

Examples
--------
>>> flags = clip_flags(clips.audio, 22050, silence_rms_db=-50.0, noise_flatness=0.30,
...                    noise_tonality_max=0.25)  # doctest: +SKIP
>>> flags.is_noise  # doctest: +SKIP
array([False, False,  True])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from soundalike.errors import ParameterError
from soundalike.features import stft_power

#: Analysis window for the spectral measures, seconds (2048 samples at 22.05 kHz).
FRAME_S = 2048 / 22050
#: Band over which flatness is measured, Hz (where applause has its energy).
FLATNESS_BAND_HZ = (500.0, 8000.0)
#: Band searched for tonal peaks, Hz (from a kick drum's thump to the upper harmonics).
PEAK_BAND_HZ = (40.0, 5000.0)
#: How far a peak must stand above the mean dB of its neighbours, dB.
PEAK_PROMINENCE_DB = 12.0
#: How far a peak must stand above the frame's mean power in :data:`PEAK_BAND_HZ`, dB.
PEAK_ABOVE_MEAN_DB = 10.0
#: Half-width of the neighbourhood a peak is compared with, Hz.
PEAK_NEIGHBOURHOOD_HZ = 60.0
#: Frames more than this far below the clip's loudest frame are ignored (gaps, fades), dB.
AUDIBLE_RANGE_DB = 50.0

_CHUNK_CLIPS = 32


@dataclass(frozen=True)
class ClipFlags:
    """Per-clip measures and flags.

    Attributes
    ----------
    rms_db : np.ndarray [shape=(n,), dtype=float32]
        RMS level of the real samples, dBFS (-200 for digital silence).
    flatness : np.ndarray [shape=(n,), dtype=float32]
        Median spectral flatness in [0, 1] (0 for a clip without audible frames).
    tonality : np.ndarray [shape=(n,), dtype=float32]
        Fraction of audible frames with a clear spectral peak, in [0, 1]; NaN where
        ``clip_flags(decisive_only=True)`` did not need it.
    is_silent : np.ndarray [shape=(n,), dtype=bool]
    is_noise : np.ndarray [shape=(n,), dtype=bool]
    """

    rms_db: np.ndarray
    flatness: np.ndarray
    tonality: np.ndarray
    is_silent: np.ndarray
    is_noise: np.ndarray

    def __len__(self) -> int:
        return int(self.rms_db.shape[0])


def analysis_frame(sr: int) -> tuple[int, int]:
    """``(n_fft, hop_length)`` of the STFT the measures use at ``sr`` Hz (2048/1024 at 22.05 kHz).

    A ``power=`` spectrogram for :func:`clip_flags` is
    ``features.stft_power(clips, n_fft=n_fft, hop_length=hop_length)``.
    """
    n_fft = 1 << int(round(np.log2(FRAME_S * sr)))  # 8-11 Hz bins at any rate
    return n_fft, n_fft // 2


def clip_flags(
    clips: np.ndarray,
    sr: int,
    *,
    silence_rms_db: float,
    noise_flatness: float,
    noise_tonality_max: float,
    real_samples: np.ndarray | None = None,
    power: torch.Tensor | None = None,
    decisive_only: bool = False,
) -> ClipFlags:
    """Measure and flag a batch of clips.

    Parameters
    ----------
    clips : np.ndarray [shape=(n, samples), dtype=float32]
        Mono clips, possibly zero-padded at the end.
    sr : int
        Sample rate in Hz, at least 8000 (below 17.8 kHz the flatness band ends at 0.45 * sr).
    silence_rms_db : float
        Clips quieter than this (dBFS) are silent.
    noise_flatness : float
        Flatness above which a non-silent clip may be noise.
    noise_tonality_max : float
        ... if its tonality is also below this.
    real_samples : np.ndarray [shape=(n,), dtype=int], optional
        Number of real (unpadded) samples at the start of each clip; defaults to all of them.
        Padding counts neither towards the level nor the spectral measures.
    power : torch.Tensor [shape=(n, frames, bins), dtype=float32], optional
        The clips' power spectrogram, ``features.stft_power(clips, n_fft=n_fft,
        hop_length=hop_length)`` with :func:`analysis_frame`'s ``(n_fft, hop_length)`` (clips
        of at least ``n_fft`` samples); computed here when not given.
    decisive_only : bool
        Measure tonality only where it decides ``is_noise`` -- clips that are neither silent nor
        below ``noise_flatness`` -- and leave it NaN elsewhere. The flags are the same; most
        music clips then skip the peak search, about half the measures' cost.

    Returns
    -------
    ClipFlags

    Raises
    ------
    ParameterError
        Clips that are not a 2-D floating-point array, ``sr`` below 8000 Hz, ``real_samples``
        of the wrong shape or out of range, or a ``power`` of the wrong shape.
    """
    clips = np.asarray(clips)
    if clips.ndim != 2:
        raise ParameterError(f"clips must have shape (n, samples), got {clips.shape}")
    if not np.issubdtype(clips.dtype, np.floating):
        raise ParameterError(f"clips must be floating-point, got {clips.dtype}")
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < 8000:
        raise ParameterError(f"sr must be an integer of at least 8000 Hz, got {sr!r}")
    sr = int(sr)
    n, samples = clips.shape
    if real_samples is None:
        real = np.full(n, samples, dtype=np.int64)
    else:
        real = np.asarray(real_samples)
        if real.shape != (n,) or not np.issubdtype(real.dtype, np.integer):
            raise ParameterError(f"real_samples must be integers of shape ({n},), got {real.dtype} {real.shape}")
        if np.any(real < 0) or np.any(real > samples):
            raise ParameterError(f"real_samples must lie in [0, {samples}]")
        real = real.astype(np.int64)
    n_fft, hop = analysis_frame(sr)
    if power is not None:
        expected = (n, samples // hop + 1, n_fft // 2 + 1)
        if samples < n_fft or tuple(power.shape) != expected:
            raise ParameterError(
                f"power must be stft_power(clips, n_fft={n_fft}, hop_length={hop}) of clips of at least "
                f"{n_fft} samples, shape {expected}; got {tuple(power.shape)} for {samples} samples"
            )
    if n == 0:
        empty = np.zeros(0, dtype=np.float32)
        return ClipFlags(empty, empty, empty, np.zeros(0, bool), np.zeros(0, bool))

    clips = np.ascontiguousarray(clips, dtype=np.float32)
    rms_db = _rms_db(clips, real)
    # decisive_only: tonality can decide only for clips that are not silent (and flat enough).
    loud = torch.from_numpy(rms_db >= silence_rms_db) if decisive_only else None
    parts = []
    with torch.inference_mode():
        if power is not None:
            # Measured where the spectrogram lies (the embed batch's GPU, when there is one).
            parts.append(_spectral_measures(power.float(), torch.from_numpy(real), sr, n_fft, samples,
                                            tonal_only=loud, min_flatness=noise_flatness))
        else:
            padded = max(samples, n_fft)  # a clip shorter than one window is zero-padded to one
            for a in range(0, n, _CHUNK_CLIPS):  # bounded memory: the spectra are ~10x the audio
                x = torch.from_numpy(clips[a : a + _CHUNK_CLIPS])
                if padded > samples:
                    x = torch.nn.functional.pad(x, (0, padded - samples))
                spec = stft_power(x, n_fft=n_fft, hop_length=hop)
                real_t = torch.from_numpy(real[a : a + _CHUNK_CLIPS])
                parts.append(_spectral_measures(
                    spec, real_t, sr, n_fft, padded, min_flatness=noise_flatness,
                    tonal_only=None if loud is None else loud[a : a + _CHUNK_CLIPS]))
    flatness, tonality = (torch.cat(p).cpu().numpy().astype(np.float32) for p in zip(*parts))
    is_silent = rms_db < silence_rms_db
    is_noise = ~is_silent & (flatness > noise_flatness) & (tonality < noise_tonality_max)
    return ClipFlags(rms_db, flatness, tonality, is_silent, is_noise)


def _rms_db(clips: np.ndarray, real: np.ndarray) -> np.ndarray:
    """dBFS [n] of the first ``real[i]`` samples of each row of ``clips`` [n, samples]."""
    energy = np.array([np.dot(clip[:r], clip[:r]) for clip, r in zip(clips, real)], dtype=np.float64)
    energy /= np.maximum(real, 1)
    return (10.0 * np.log10(np.maximum(energy, 1e-20))).astype(np.float32)


def _spectral_measures(
    power: torch.Tensor, real: torch.Tensor, sr: int, n_fft: int, samples: int, *,
    tonal_only: torch.Tensor | None = None, min_flatness: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Median flatness [n] and tonal-frame fraction [n] over the audible frames of real audio.

    ``power`` [n, frames, bins] is :func:`~soundalike.features.stft_power` of clips of
    ``samples`` samples (at least ``n_fft``) with a hop of ``n_fft // 2``. With ``tonal_only``
    (bool [n]) tonality is measured only for those clips whose flatness exceeds ``min_flatness``;
    the others get NaN.
    """
    hop = n_fft // 2
    # Centred frame t spans samples [(t - 1) * hop, (t + 1) * hop): frames 1..inner lie wholly
    # inside the clip (the first and last ones reach into the reflected padding). The measured
    # frames are 1, 3, 5, ...: back to back.
    inner = (samples - n_fft) // hop + 1
    power = power[:, 1 : inner + 1]
    measured = power[:, ::2]
    n, frames, bins = measured.shape
    device = power.device
    freqs = torch.arange(bins) * (sr / n_fft)
    real = real.to(device)

    # Audible frames: centre within the real audio, within AUDIBLE_RANGE_DB of the loudest one.
    centre = (torch.arange(frames, device=device) * 2 + 1) * hop
    inside = centre[None, :] < real[:, None]
    frame_energy = torch.where(inside, measured.sum(dim=2), torch.zeros(()))
    loudest = frame_energy.amax(dim=1, keepdim=True)
    audible = inside & (frame_energy > loudest * 10 ** (-AUDIBLE_RANGE_DB / 10)) & (loudest > 0)
    n_audible = audible.sum(dim=1).clamp(min=1)

    # Below 17.8 kHz sampling the band stops at 90 % of Nyquist (resamplers roll off above).
    a, b = _bin_range(freqs, FLATNESS_BAND_HZ[0], min(FLATNESS_BAND_HZ[1], 0.45 * sr))
    band = measured[:, :, a:b] + 1e-20
    arithmetic = band.mean(dim=2)
    flat = torch.exp(band.log_().mean(dim=2)) / arithmetic  # [n, frames]
    flat = torch.where(audible, flat, torch.full((), float("nan")))
    flatness = torch.nan_to_num(torch.nanmedian(flat, dim=1).values, nan=0.0)

    if tonal_only is None:
        tonal = _tonal_frames(power, freqs, n_fft, sr) & audible  # freqs stay on the CPU: only bin ranges
        return flatness, tonal.sum(dim=1).float() / n_audible
    rows = tonal_only.to(device) & (flatness > min_flatness)
    tonality = torch.full((n,), float("nan"), device=device)
    if bool(rows.any()):
        tonal = _tonal_frames(power[rows], freqs, n_fft, sr) & audible[rows]
        tonality[rows] = tonal.sum(dim=1).float() / n_audible[rows]
    return flatness, tonality


def _tonal_frames(power: torch.Tensor, freqs: torch.Tensor, n_fft: int, sr: int) -> torch.Tensor:
    """bool [n, (frames + 1) // 2]: which of frames 0, 2, 4, ... of ``power`` [n, frames, bins]
    hold a clear peak in PEAK_BAND_HZ."""
    k = max(3, int(round(PEAK_NEIGHBOURHOOD_HZ * n_fft / sr)))
    a, b = _bin_range(freqs, *PEAK_BAND_HZ)
    lo, hi = max(0, a - k), min(freqs.shape[0], b + k)
    p = power[:, :, lo:hi]  # the band's bins plus a neighbourhood of k bins either side
    mid, odd = p[:, ::2], p[:, 1::2]
    n, frames, width = mid.shape
    # Sum of each measured frame and the frames either side (one at the edges). A mean would
    # divide every bin of a frame by the same count, which cancels in both tests below.
    smooth = mid + 1e-20
    smooth[:, : odd.shape[1]] += odd  # the frame after (the last measured frame may have none)
    smooth[:, 1:] += odd[:, : frames - 1]  # the frame before (the first has none)
    rows = slice(a - lo, b - lo)  # the band's bins inside the slice
    # Above-the-mean margin is compared with the prominence threshold below, hence the shift.
    threshold = torch.log10(smooth[:, :, rows].mean(dim=2, keepdim=True)) + (
        PEAK_ABOVE_MEAN_DB - PEAK_PROMINENCE_DB
    ) / 10
    # log10 power (dB / 10), between k zero bins either side: a window clipped at the edge of
    # the slice then sums only the bins that are there.
    padded = torch.empty(n, frames, width + 2 * k, device=power.device)
    padded[:, :, :k] = 0.0
    padded[:, :, k + width :] = 0.0
    log = torch.log10(smooth, out=padded[:, :, k : k + width])
    # Sum of the log power over bins r-k..r-3 and r+3..r+k (the +-k neighbourhood without the
    # main lobe): runs[j] sums padded[j : j + k - 2], and padded[r + k] is bin r.
    runs = _run_sums(padded, k - 2)
    neighbours = runs[:, :, rows] + runs[:, :, rows.start + k + 3 : rows.stop + k + 3]
    r = torch.arange(rows.start, rows.stop, device=power.device)
    n_neighbours = ((r + k + 1).clamp(max=width) - (r - k).clamp(min=0)) - (
        (r + 3).clamp(max=width) - (r - 2).clamp(min=0)
    )
    band = log[:, :, rows]
    # A peak stands PEAK_PROMINENCE_DB out from its neighbours and PEAK_ABOVE_MEAN_DB above the
    # band's mean power: the smaller of the two margins (both in prominence units) is >= the
    # prominence threshold.
    prominence = torch.addcmul(band, neighbours, -1.0 / n_neighbours.float())
    torch.minimum(prominence, band - threshold, out=prominence)
    return prominence.amax(dim=2) >= PEAK_PROMINENCE_DB / 10


def _run_sums(x: torch.Tensor, m: int) -> torch.Tensor:
    """Sums of ``m`` consecutive entries along the last axis: ``out[..., j] = x[..., j:j + m].sum(-1)``.

    By doubling: about ``log2(m)`` whole-array additions instead of ``m - 1``.
    """
    out, covered = None, 0
    block, size = x, 1  # block[..., j] = x[..., j:j + size].sum(-1)
    while m:
        if m & 1:
            out = block if out is None else out[..., : out.shape[-1] - size] + block[..., covered:]
            covered += size
        m >>= 1
        if m:
            block = block[..., :-size] + block[..., size:]
            size *= 2
    return out


def _bin_range(freqs: torch.Tensor, low_hz: float, high_hz: float) -> tuple[int, int]:
    """``(a, b)``: the bins ``a:b`` whose frequencies lie in ``[low_hz, high_hz]``."""
    inside = np.flatnonzero((freqs.numpy() >= low_hz) & (freqs.numpy() <= high_hz))
    return int(inside[0]), int(inside[-1]) + 1
