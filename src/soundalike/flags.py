"""Flag clips that are not music: silence, and broadband noise such as applause.

Three measures per clip, computed on a whole batch at once in torch from one STFT (a ~93 ms
Hann window, half overlap):

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
    5 kHz. The power is first averaged over 3 frames (noise averages down, a sustained partial
    does not); a bin is a peak when it stands :data:`PEAK_PROMINENCE_DB` above the mean dB of
    its neighbours within +/-60 Hz (main lobe left out) *and* :data:`PEAK_ABOVE_MEAN_DB` above
    the frame's mean power in the band, so a faint hum under loud noise does not count. Noise
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
from soundalike.features import power_spectrogram

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
        Fraction of audible frames with a clear spectral peak, in [0, 1].
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


def clip_flags(
    clips: np.ndarray,
    sr: int,
    *,
    silence_rms_db: float,
    noise_flatness: float,
    noise_tonality_max: float,
    real_samples: np.ndarray | None = None,
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

    Returns
    -------
    ClipFlags

    Raises
    ------
    ParameterError
        Clips that are not a 2-D floating-point array, ``sr`` below 8000 Hz, or
        ``real_samples`` of the wrong shape or out of range.
    """
    clips = np.asarray(clips)
    if clips.ndim != 2:
        raise ParameterError(f"clips must have shape (n, samples), got {clips.shape}")
    if not np.issubdtype(clips.dtype, np.floating):
        raise ParameterError(f"clips must be floating-point, got {clips.dtype}")
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < 8000:
        raise ParameterError(f"sr must be an integer of at least 8000 Hz, got {sr!r}")
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
    if n == 0:
        empty = np.zeros(0, dtype=np.float32)
        return ClipFlags(empty, empty, empty, np.zeros(0, bool), np.zeros(0, bool))

    parts = []
    with torch.inference_mode():
        for a in range(0, n, _CHUNK_CLIPS):  # bounded memory: the spectra are ~20x the audio
            x = torch.from_numpy(np.ascontiguousarray(clips[a : a + _CHUNK_CLIPS], dtype=np.float32))
            real_t = torch.from_numpy(real[a : a + _CHUNK_CLIPS])
            parts.append((_rms_db(x, real_t), *_spectral_measures(x, real_t, int(sr))))
    rms_db, flatness, tonality = (torch.cat(p).numpy().astype(np.float32) for p in zip(*parts))
    is_silent = rms_db < silence_rms_db
    is_noise = ~is_silent & (flatness > noise_flatness) & (tonality < noise_tonality_max)
    return ClipFlags(rms_db, flatness, tonality, is_silent, is_noise)


def _rms_db(x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """dBFS [n] of the first ``real[i]`` samples of each row of ``x`` [n, samples]."""
    mask = torch.arange(x.shape[1])[None, :] < real[:, None]
    energy = torch.where(mask, x.square(), torch.zeros(())).sum(dim=1, dtype=torch.float64) / real.clamp(min=1)
    return 10.0 * torch.log10(energy.clamp(min=1e-20))


def _spectral_measures(x: torch.Tensor, real: torch.Tensor, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Median flatness [n] and tonal-frame fraction [n] over the audible frames of real audio."""
    n_fft = 1 << int(round(np.log2(FRAME_S * sr)))  # 8-11 Hz bins at any rate
    hop = n_fft // 2
    if x.shape[1] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[1]))
    power = power_spectrogram(x, n_fft=n_fft, hop_length=hop, center=False)  # [n, bins, frames]
    n, bins, frames = power.shape
    freqs = torch.arange(bins) * (sr / n_fft)

    # Audible frames: centre within the real audio, within AUDIBLE_RANGE_DB of the loudest one.
    centre = torch.arange(frames) * hop + n_fft // 2
    inside = centre[None, :] < real[:, None]
    frame_energy = torch.where(inside, power.sum(dim=1), torch.zeros(()))
    loudest = frame_energy.amax(dim=1, keepdim=True)
    audible = inside & (frame_energy > loudest * 10 ** (-AUDIBLE_RANGE_DB / 10)) & (loudest > 0)
    n_audible = audible.sum(dim=1).clamp(min=1)

    # Below 17.8 kHz sampling the band stops at 90 % of Nyquist (resamplers roll off above).
    a, b = _bin_range(freqs, FLATNESS_BAND_HZ[0], min(FLATNESS_BAND_HZ[1], 0.45 * sr))
    pb = power[:, a:b, :] + 1e-20
    flat = torch.exp(torch.log(pb).mean(dim=1)) / pb.mean(dim=1)  # [n, frames]
    flat = torch.where(audible, flat, torch.full((), float("nan")))
    flatness = torch.nan_to_num(torch.nanmedian(flat, dim=1).values, nan=0.0)

    # Tonal peaks, on the bins of PEAK_BAND_HZ plus a neighbourhood of k bins either side.
    k = max(3, int(round(PEAK_NEIGHBOURHOOD_HZ * n_fft / sr)))
    a, b = _bin_range(freqs, *PEAK_BAND_HZ)
    lo, hi = max(0, a - k), min(bins, b + k)
    p = power[:, lo:hi, :]
    smooth = p.clone()  # mean over 3 frames (2 at the edges)
    smooth[:, :, 1:] += p[:, :, :-1]
    smooth[:, :, :-1] += p[:, :, 1:]
    count = torch.full((frames,), 3.0)
    count[0] -= 1
    count[-1] -= 1
    smooth /= count.clamp(min=1)
    db = 10.0 * torch.log10(smooth + 1e-20)
    rows = slice(a - lo, b - lo)  # the band's bins inside the slice
    neighbours = _box_sums(db, rows, k) - _box_sums(db, rows, 2)  # +-k bins without the main lobe
    n_neighbours = _box_counts(db.shape[1], rows, k) - _box_counts(db.shape[1], rows, 2)
    band_db = db[:, rows, :]
    prominence = band_db - neighbours / n_neighbours[None, :, None]
    mean_db = 10.0 * torch.log10(smooth[:, rows, :].mean(dim=1, keepdim=True) + 1e-20)
    is_peak = (prominence >= PEAK_PROMINENCE_DB) & (band_db - mean_db >= PEAK_ABOVE_MEAN_DB)
    tonal = is_peak.any(dim=1) & audible
    tonality = tonal.sum(dim=1).float() / n_audible
    return flatness, tonality


def _bin_range(freqs: torch.Tensor, low_hz: float, high_hz: float) -> tuple[int, int]:
    """``(a, b)``: the bins ``a:b`` whose frequencies lie in ``[low_hz, high_hz]``."""
    inside = torch.nonzero((freqs >= low_hz) & (freqs <= high_hz))[:, 0]
    return int(inside[0]), int(inside[-1]) + 1


def _box_sums(x: torch.Tensor, rows: slice, half: int) -> torch.Tensor:
    """Sums of ``x[:, r - half : r + half + 1, :]`` (clipped to the array) for ``r`` in ``rows``."""
    csum = torch.cumsum(x, dim=1)
    zero = torch.zeros_like(csum[:, :1]).expand(-1, half + 1, -1)
    last = csum[:, -1:].expand(-1, half, -1)
    padded = torch.cat([zero, csum, last], dim=1)  # padded[j] = sum of x rows < j - half
    return padded[:, rows.start + 2 * half + 1 : rows.stop + 2 * half + 1] - padded[:, rows.start : rows.stop]


def _box_counts(size: int, rows: slice, half: int) -> torch.Tensor:
    r = torch.arange(rows.start, rows.stop)
    return ((r + half + 1).clamp(max=size) - (r - half).clamp(min=0)).float()
