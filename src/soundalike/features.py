"""Log-mel spectrograms, computed in batches with torch.

The mel filter bank comes from ``transformers.audio_utils.mel_filter_bank`` (Slaney scale and
normalisation, the same bank librosa builds); the STFT is ``torch.stft``. Both the comparison
(:mod:`soundalike.compare`) and the model-free embedder use this one function.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from soundalike.errors import ParameterError


@dataclass(frozen=True)
class MelParams:
    """How to turn a wave into a log-mel spectrogram.

    Attributes
    ----------
    n_fft : int
        FFT size in samples (the analysis window length).
    hop_length : int
        Samples between frames.
    n_mels : int
        Number of mel bands.
    fmin_hz, fmax_hz : float
        Band edges in Hz; ``fmax_hz`` is capped at Nyquist, and ``None`` means Nyquist.
    top_db : float or None
        Floor each spectrogram at ``max - top_db`` dB; ``None`` keeps everything.
    """

    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin_hz: float = 0.0
    fmax_hz: float | None = None
    top_db: float | None = 80.0

    def __post_init__(self) -> None:
        if self.n_fft < 16 or self.hop_length < 1 or self.n_mels < 1:
            raise ParameterError(f"invalid mel parameters: {self}")
        if self.fmax_hz is not None and self.fmax_hz <= self.fmin_hz:
            raise ParameterError(f"fmax_hz ({self.fmax_hz}) must exceed fmin_hz ({self.fmin_hz})")


def power_spectrogram(x: torch.Tensor, *, n_fft: int, hop_length: int, center: bool) -> torch.Tensor:
    """|STFT|² with a Hann window.

    Parameters
    ----------
    x : torch.Tensor [shape=(batch, n), dtype=float32]
    n_fft, hop_length : int
        Window and hop in samples.
    center : bool
        Pad by ``n_fft // 2`` on both sides (reflecting, or with zeros for inputs shorter than
        that), so frame ``t`` is centred on sample ``t * hop_length``.

    Returns
    -------
    torch.Tensor [shape=(batch, n_fft // 2 + 1, frames), dtype=float32]
    """
    window = torch.hann_window(n_fft, device=x.device)
    pad_mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop_length, window=window, center=center,
                      pad_mode=pad_mode, return_complex=True)
    return spec.real.square() + spec.imag.square()


@lru_cache(maxsize=32)
def mel_filters(sr: int, params: MelParams) -> torch.Tensor:
    """Mel filter bank as a float32 tensor [n_mels, n_fft // 2 + 1]."""
    from transformers.audio_utils import mel_filter_bank

    fmax = sr / 2.0 if params.fmax_hz is None else min(params.fmax_hz, sr / 2.0)
    if fmax <= params.fmin_hz:
        raise ParameterError(f"fmin_hz ({params.fmin_hz}) must be below Nyquist ({sr / 2} Hz)")
    bank = mel_filter_bank(
        num_frequency_bins=params.n_fft // 2 + 1,
        num_mel_filters=params.n_mels,
        min_frequency=params.fmin_hz,
        max_frequency=fmax,
        sampling_rate=sr,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.ascontiguousarray(bank.T, dtype=np.float32))


def log_mel(
    waves: np.ndarray | torch.Tensor,
    sr: int,
    params: MelParams = MelParams(),
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Log-mel power spectrogram in dB of a batch of waves.

    Parameters
    ----------
    waves : array [shape=(batch, n) or (n,), dtype=float32]
    sr : int
        Sample rate in Hz.
    params : MelParams
    device : torch device, optional
        Where to compute; defaults to where ``waves`` is (CPU for numpy input).

    Returns
    -------
    torch.Tensor [shape=(batch, n_mels, frames) or (n_mels, frames), dtype=float32]
        ``10 * log10(power)``, centred frames (``frames = n // hop_length + 1``), each item
        floored at its own ``max - top_db``.
    """
    x = torch.as_tensor(waves, dtype=torch.float32)
    if device is not None:
        x = x.to(device)
    single = x.ndim == 1
    if single:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise ParameterError(f"waves must have shape (batch, n) or (n,), got {tuple(x.shape)}")
    if x.shape[-1] < 2:
        raise ParameterError("waves must hold at least 2 samples")
    power = power_spectrogram(x, n_fft=params.n_fft, hop_length=params.hop_length, center=True)
    mel = torch.matmul(mel_filters(sr, params).to(x.device), power)
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    if params.top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)
        db = torch.maximum(db, peak - params.top_db)
    return db[0] if single else db
