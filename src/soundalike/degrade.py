"""Degradations a query may have gone through: lossy coding, noise, speed, phone band, gain.

Pure functions on a mono float32 wave and its sample rate, each returning ``(wave, sr)``; with
:func:`encode` they produce the bytes an evaluation (or a test) sends as a query. Seeded where
random, so an evaluation is reproducible.

Examples
--------
>>> wave, sr = apply("phone", excerpt, 44100, rng=np.random.default_rng(0))  # doctest: +SKIP
>>> query_bytes = encode(wave, sr, "wav")  # doctest: +SKIP
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, sosfiltfilt

from soundalike.errors import ParameterError

#: MPEG layer III bitrates libsndfile maps linearly onto compression_level 0..1 (320 → 32 kbps).
_MP3_MAX_KBPS, _MP3_MIN_KBPS = 320, 32


def mp3(wave: np.ndarray, sr: int, *, kbps: int = 64) -> tuple[np.ndarray, int]:
    """Encode as constant-bitrate mp3 at ``kbps`` and decode again."""
    data = encode(wave, sr, "mp3", kbps=kbps)
    out, out_sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return out.mean(axis=1), int(out_sr)


def pink_noise(wave: np.ndarray, sr: int, *, snr_db: float = 20.0, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Add 1/f (pink) noise at ``snr_db`` below the signal's power."""
    n = wave.shape[0]
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / sr)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=n)
    signal_power = float(np.mean(wave.astype(np.float64) ** 2)) or 1e-12
    noise *= np.sqrt(signal_power / (10 ** (snr_db / 10)) / max(float(np.mean(noise**2)), 1e-20))
    return (wave + noise).astype(np.float32), sr


def speed(wave: np.ndarray, sr: int, *, factor: float) -> tuple[np.ndarray, int]:
    """Play ``factor`` times faster (tempo and pitch together, like a tape or a DJ deck)."""
    if not 0.5 <= factor <= 2.0:
        raise ParameterError(f"speed factor must be in [0.5, 2], got {factor}")
    return soxr.resample(wave, sr * factor, sr, quality="HQ").astype(np.float32), sr


def phone(wave: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """Telephone channel: 300-3400 Hz band-pass, then 8 kHz sampling."""
    sos = butter(6, [300.0, 3400.0], btype="bandpass", fs=sr, output="sos")
    band = sosfiltfilt(sos, wave).astype(np.float32)
    return soxr.resample(band, sr, 8000, quality="HQ").astype(np.float32), 8000


def gain(wave: np.ndarray, sr: int, *, db: float) -> tuple[np.ndarray, int]:
    """Scale by ``db`` decibels (clipped to [-1, 1] as a real file would be)."""
    return np.clip(wave * 10 ** (db / 20), -1.0, 1.0).astype(np.float32), sr


#: The named degradations an evaluation cycles through.
DEGRADATIONS: dict[str, Callable[..., tuple[np.ndarray, int]]] = {
    "none": lambda w, sr, rng: (w, sr),
    "mp3_64k": lambda w, sr, rng: mp3(w, sr, kbps=64),
    "pink_noise_20db": lambda w, sr, rng: pink_noise(w, sr, snr_db=20.0, rng=rng),
    "speed_+3pct": lambda w, sr, rng: speed(w, sr, factor=1.03),
    "speed_-3pct": lambda w, sr, rng: speed(w, sr, factor=0.97),
    "phone": lambda w, sr, rng: phone(w, sr),
    "gain_+6db": lambda w, sr, rng: gain(w, sr, db=6.0),
    "gain_-6db": lambda w, sr, rng: gain(w, sr, db=-6.0),
    # Two at once, as queries meet them: a phone call of a low-bitrate stream, a noisy room
    # recording of a slightly fast deck.
    "phone+mp3_64k": lambda w, sr, rng: mp3(*phone(w, sr), kbps=64),
    "pink_noise_20db+speed_+3pct": lambda w, sr, rng: speed(*pink_noise(w, sr, snr_db=20.0, rng=rng), factor=1.03),
}


def apply(name: str, wave: np.ndarray, sr: int, *, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Apply the degradation called ``name`` (a key of :data:`DEGRADATIONS`)."""
    if name not in DEGRADATIONS:
        raise ParameterError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}")
    return DEGRADATIONS[name](np.asarray(wave, dtype=np.float32), sr, rng)


def encode(wave: np.ndarray, sr: int, fmt: str = "wav", *, kbps: int | None = None) -> bytes:
    """The bytes of ``wave`` as a ``wav`` (PCM 16), ``flac`` or constant-bitrate ``mp3`` file."""
    buffer = io.BytesIO()
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    wave = wave / peak * 0.999 if peak > 1.0 else wave
    if fmt == "mp3":
        kbps = 128 if kbps is None else kbps
        if not _MP3_MIN_KBPS <= kbps <= _MP3_MAX_KBPS:
            raise ParameterError(f"mp3 bitrate must be {_MP3_MIN_KBPS}-{_MP3_MAX_KBPS} kbps, got {kbps}")
        level = (_MP3_MAX_KBPS - kbps) / (_MP3_MAX_KBPS - _MP3_MIN_KBPS)
        sf.write(buffer, wave, sr, format="MP3", bitrate_mode="CONSTANT", compression_level=min(level, 0.999))
    elif fmt in ("wav", "flac"):
        sf.write(buffer, wave, sr, format=fmt.upper(), subtype="PCM_16")
    else:
        raise ParameterError(f"unknown format {fmt!r}; use wav, flac or mp3")
    return buffer.getvalue()
