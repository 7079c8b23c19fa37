"""The model-free default embedder ``mel``: summary statistics of a batched log-mel spectrogram.

No weights, deterministic, and cheap enough to embed a catalogue on CPUs. A batch of clips goes
through one STFT (:func:`soundalike.features.stft_power`, or a spectrogram the caller already
has: :meth:`MelEmbedder.embed_power`) and one block-sparse mel matmul; all the summaries below
are reductions of that spectrogram, computed in torch on the whole batch.

Vector layout (defaults: 22050 Hz, ``n_fft`` 2048, ``hop_length`` 1024, 128 mel bands to 8 kHz)
------------------------------------------------------------------------------------------
Each clip's dB spectrogram (floored 60 dB below its peak) first has its own mean level
subtracted, so a gain change moves no feature. The bands stop at 8 kHz and the floor sits at
60 dB, not 80: lossy codecs cut the top octave, and hiss fills the quiet cells, and either would
otherwise move the vector of a recording more than the difference to another one.

=============  ====  ==========================================================================
block          dim   what
=============  ====  ==========================================================================
``mel_mean``    64   mean over time of each of 64 bands (mel bands averaged in pairs), dB
``mel_std``     64   standard deviation over time of each band, minus its mean across bands
``contrast``    16   8 groups of 16 adjacent mel bands: mean and std over time of max minus
                     min in the group (each half minus its mean across groups)
``delta``       32   16 bands: mean and std over time of ``|frame-to-frame change|`` (each half
                     minus its mean across bands)
``rhythm``      16   onset-envelope autocorrelation, max-pooled over 16 log-spaced lag windows
                     from 0.1 s to 3 s (a tempo profile)
``chroma``      24   12 pitch classes folded from the mel bands narrower than a semitone
                     (~400 Hz to 5 kHz): share of energy minus 1/12, and std over time of the
                     per-frame shares
``global``       9   scalars: mean band std, loudness std, centroid mean and std, mean
                     contrast, onset mean and std, pulse clarity, fraction of floored cells
=============  ====  ==========================================================================

225 dimensions in all. Each block is centred and divided by a fixed constant (no fitting at
run time; :data:`_BLOCK_SCALE` was measured once as the median block norm over synthetic sample
tracks and real game soundtracks) so that its typical L2 norm is about 1, then multiplied by its
weight in :data:`BLOCK_WEIGHTS`; :meth:`Embedder.embed` L2-normalises the concatenation, so the
cosine of two vectors is roughly a weighted mean of per-block similarities and no block
dominates. The global scalars are centred and scaled the same way and squashed by ``tanh``.
Blocks that measure the *presence* of something (pitch, pulse) shrink towards zero when it is
absent, so noise in them does not count as evidence. An all-zero clip gives a finite vector.

Examples
--------
>>> emb = create_embedder(EmbedderConfig(name="mel"), clip_s=10.0)  # doctest: +SKIP
>>> emb.embed(clips).shape  # clips: float32 [n, 220500]  # doctest: +SKIP
(n, 225)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from soundalike.config import EmbedderConfig
from soundalike.embedders.base import Embedder, register_embedder
from soundalike.errors import ConfigError, ParameterError
from soundalike.features import MelParams, mel_power, power_to_db, stft_power

#: Bump whenever the code below changes the vectors; it is hashed into :attr:`MelEmbedder.version`.
FEATURE_REVISION = 1

#: Relative weight of each block in the cosine similarity (see the module docstring).
BLOCK_WEIGHTS = {
    "mel_mean": 1.0,
    "mel_std": 0.8,
    "contrast": 0.4,
    "delta": 0.7,
    "rhythm": 0.8,
    "chroma": 0.8,
    "global": 0.8,
}

_N_TIMBRE_BANDS = 64
_N_DELTA_BANDS = 16
_N_CONTRAST_GROUPS = 8
_RHYTHM_LAG_EDGES_S = (0.1, 3.0)
_N_RHYTHM_LAGS = 16
_PULSE_LAGS_S = (0.25, 2.0)
_CHROMA_FMIN_HZ = 80.0
_CHROMA_FMAX_HZ = 5000.0
_CHROMA_MAX_BAND_SEMITONES = 1.0
_OPTION_KEYS = ("sample_rate_hz", "n_mels", "n_fft", "hop_length")

# Fixed scales that bring each block to an L2 norm of about 1 (the median over a calibration set
# of synthetic sample tracks and real game soundtracks); measured once, not fitted at run time.
_BLOCK_SCALE = {
    "mel_mean": 75.0,  # dB
    "mel_std": 17.0,  # dB
    "contrast": 25.0,  # dB
    "delta": 4.8,  # dB per frame
    "rhythm": 1.2,  # autocorrelation
    "chroma": 0.33,  # fraction of energy
}
#: Std over time of the per-frame pitch-class shares in white noise and applause: no movement.
_CHROMA_MOVEMENT_NOISE = 0.02
# (centre, scale) of each global scalar (median and interquartile range / 1.35 over the
# calibration set), then squashed by tanh.
_GLOBAL_NORM = (
    (6.4, 1.8),  # mean band std over time [dB]
    (4.2, 1.75),  # std of frame loudness [dB]
    (0.10, 0.06),  # spectral centroid, fraction of the mel axis
    (0.048, 0.037),  # std over time of the centroid
    (18.3, 5.3),  # mean spectral contrast [dB]
    (1.8, 0.68),  # mean onset strength [dB per frame]
    (2.4, 1.5),  # std of onset strength [dB per frame]
    (0.58, 0.22),  # pulse clarity (autocorrelation peak), [-1, 1]
    (0.20, 0.21),  # fraction of cells at the top_db floor
)


@dataclass(frozen=True)
class MelEmbedderParams:
    """Everything that determines the vectors (hashed into the version).

    Attributes
    ----------
    sample_rate_hz : int
    n_fft, hop_length : int
        STFT size and hop in samples.
    n_mels : int
        Mel bands of the underlying spectrogram (at least 64).
    clip_s : float
        Clip length, seconds: statistics over a different span are different vectors.
    top_db : float
        Floor of the spectrogram below each clip's peak, dB.
    fmax_hz : float
        Top edge of the mel bank, Hz (capped at Nyquist).
    """

    sample_rate_hz: int = 22050
    n_fft: int = 2048
    hop_length: int = 1024
    n_mels: int = 128
    clip_s: float = 10.0
    top_db: float = 60.0
    fmax_hz: float = 8000.0

    @property
    def mel(self) -> MelParams:
        return MelParams(
            n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels, fmax_hz=self.fmax_hz, top_db=self.top_db
        )

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate_hz / self.hop_length


def mel_embedder_version(params: MelEmbedderParams) -> str:
    """``"1-"`` + 10 hex digits of the sha256 of the parameters, constants and code revision.

    Examples
    --------
    >>> mel_embedder_version(MelEmbedderParams()) == mel_embedder_version(MelEmbedderParams())
    True
    >>> mel_embedder_version(MelEmbedderParams(n_mels=96)) == mel_embedder_version(MelEmbedderParams())
    False
    """
    payload = {
        "revision": FEATURE_REVISION,
        "params": asdict(params),
        "weights": BLOCK_WEIGHTS,
        "scales": _BLOCK_SCALE,
        "global_norm": _GLOBAL_NORM,
        "constants": [
            _N_TIMBRE_BANDS, _N_DELTA_BANDS, _N_CONTRAST_GROUPS, _RHYTHM_LAG_EDGES_S, _N_RHYTHM_LAGS,
            _PULSE_LAGS_S, _CHROMA_FMIN_HZ, _CHROMA_FMAX_HZ, _CHROMA_MAX_BAND_SEMITONES,
            _CHROMA_MOVEMENT_NOISE,
        ],
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"1-{digest[:10]}"


class MelEmbedder(Embedder):
    """Log-mel summary vectors; see the module docstring for the layout.

    Parameters
    ----------
    params : MelEmbedderParams
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"`` (CUDA when available).

    Raises
    ------
    ConfigError
        An unusable device or parameter set.
    """

    name = "mel"

    def __init__(self, params: MelEmbedderParams = MelEmbedderParams(), *, device: str = "auto"):
        _check_params(params)
        self.params = params
        self.sample_rate_hz = params.sample_rate_hz
        self.clip_s = float(params.clip_s)
        self.version = mel_embedder_version(params)
        self.device = _resolve_device(device)
        self._mel = params.mel
        m = params.n_mels
        dev = self.device
        # Band pools as [m, k] matrices, so frames-first spectrograms [b, t, m] pool with one matmul.
        self._timbre_pool_t = _band_pool(m, _N_TIMBRE_BANDS).T.contiguous().to(dev)
        self._delta_pool_t = _band_pool(m, _N_DELTA_BANDS).T.contiguous().to(dev)
        # Mel power [b, t, m] @ this = 12 pitch classes, band-position-weighted power, total power.
        band_pos = torch.linspace(0.0, 1.0, m)
        self._power_fold = torch.cat(
            [_chroma_fold(params).T, band_pos[:, None], torch.ones(m, 1)], dim=1
        ).contiguous().to(dev)
        lag_windows, pulse_window = _lag_windows(params)
        self._lag_windows, self._pulse_window = lag_windows.to(dev), pulse_window.to(dev)
        self._global_centre = torch.tensor([c for c, _ in _GLOBAL_NORM], device=dev)
        self._global_scale = torch.tensor([s for _, s in _GLOBAL_NORM], device=dev)
        self.block_dims = {
            "mel_mean": self._timbre_pool_t.shape[1],
            "mel_std": self._timbre_pool_t.shape[1],
            "contrast": 2 * _N_CONTRAST_GROUPS,
            "delta": 2 * self._delta_pool_t.shape[1],
            "rhythm": _N_RHYTHM_LAGS,
            "chroma": 24,
            "global": len(_GLOBAL_NORM),
        }
        self.dim = sum(self.block_dims.values())

    def embed_power(self, power: torch.Tensor) -> np.ndarray:
        """Embed clips from their power spectrogram: the vectors :meth:`embed` gives for them.

        Lets a caller that already has the clips' STFT (the clip flags use the same frames at
        the default settings; see :func:`soundalike.extract.extract_track`) skip computing it
        again.

        Parameters
        ----------
        power : torch.Tensor [shape=(n, frames, n_fft // 2 + 1), dtype=float32]
            ``features.stft_power(clips, n_fft=params.n_fft, hop_length=params.hop_length)`` of
            clips of :attr:`clip_samples` samples.

        Returns
        -------
        np.ndarray [shape=(n, dim), dtype=float32]
            Each row has unit L2 norm.

        Raises
        ------
        ParameterError
            A ``power`` of another shape.
        """
        expected = (self.clip_samples // self.params.hop_length + 1, self.params.n_fft // 2 + 1)
        if power.ndim != 3 or tuple(power.shape[1:]) != expected:
            raise ParameterError(
                f"{self.name} embedder expects power spectra of shape (n, {expected[0]}, {expected[1]}) "
                f"(stft_power of {self.clip_samples}-sample clips, n_fft {self.params.n_fft}, "
                f"hop {self.params.hop_length}), got {tuple(power.shape)}"
            )
        if power.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            vectors = self._vectors(power.to(self.device, torch.float32))
        # As Embedder.embed normalises, so both paths give the same vectors.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _embed(self, clips: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(clips)).to(self.device)
            return self._vectors(stft_power(x, n_fft=self.params.n_fft, hop_length=self.params.hop_length))

    def _vectors(self, power: torch.Tensor) -> np.ndarray:
        """Raw vectors [b, dim] from power spectra [b, frames, bins]."""
        db = power_to_db(mel_power(power, self.sample_rate_hz, self._mel), self._mel.top_db)  # [b, t, m]
        blocks = self._blocks(db)
        out = torch.cat([BLOCK_WEIGHTS[k] * blocks[k] for k in BLOCK_WEIGHTS], dim=1)
        out = torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return out.cpu().numpy().astype(np.float32)

    def _blocks(self, db: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scaled feature blocks, each [b, block_dim], from dB spectrograms [b, t, m]."""
        raw = self._raw_blocks(db)
        out = {k: raw[k] / _BLOCK_SCALE[k] for k in _BLOCK_SCALE}
        glob = torch.tanh((raw["global"] - self._global_centre) / self._global_scale)
        out["global"] = glob / math.sqrt(len(_GLOBAL_NORM))
        return out

    def _raw_blocks(self, db: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unscaled feature blocks, each [b, block_dim], from dB spectrograms [b, t, m].

        Frames first: every reduction over bands reads contiguous rows, and the band pools are
        one matmul each over all frames of the batch.
        """
        floor = db.amax(dim=(1, 2), keepdim=True) - self._mel.top_db
        # (Summing the comparison as bytes is several times faster than as bools.)
        floored = (db <= floor + 1e-3).view(torch.uint8).sum(dim=(1, 2), dtype=torch.int32)
        at_floor = floored / (db.shape[1] * db.shape[2])
        x = db - db.mean(dim=(1, 2), keepdim=True)  # per-clip level normalisation, dB
        b, t, m = x.shape

        # Timbre: band means and stds over time (the stds relative to their mean over bands).
        xt = torch.matmul(x, self._timbre_pool_t)  # [b, t, 64]
        band_mean = xt.mean(dim=1)
        band_std = _std_over_time(xt, band_mean)
        mean_std = band_std.mean(dim=1)

        # Spectral contrast: max minus min within groups of adjacent mel bands, per frame.
        k = m // _N_CONTRAST_GROUPS
        groups = x[:, :, : k * _N_CONTRAST_GROUPS].reshape(b, t, _N_CONTRAST_GROUPS, k)
        contrast_t = groups.amax(dim=3) - groups.amin(dim=3)  # [b, t, g]
        contrast_mean = contrast_t.mean(dim=1)

        # Frame-to-frame change, in 16 bands.
        d = x[:, 1:] - x[:, :-1]  # [b, t-1, m]
        dabs = torch.matmul(d.abs(), self._delta_pool_t)  # [b, t-1, 16]
        dabs_mean = dabs.mean(dim=1)

        # Rhythm: autocorrelation of the onset envelope (mean rise across bands, dB per frame).
        onset = torch.relu(d).mean(dim=2)  # [b, t-1]
        acf = _autocorrelation(onset, self._lag_windows.shape[1])
        rhythm = (acf[:, None, :] + self._lag_windows).amax(dim=2)  # [b, lags]
        pulse = (acf + self._pulse_window).amax(dim=1)

        # Chroma: mel power folded into pitch classes; flat (no pitch) gives zeros. The same
        # matmul gives each frame's band-position-weighted and total power (the centroid).
        power = torch.exp(x * (math.log(10.0) / 10.0))
        folded = torch.matmul(power, self._power_fold)  # [b, t, 12 + 2]
        chroma_t = folded[:, :, :12]
        frame_total = chroma_t.sum(dim=2, keepdim=True)
        eps = 1e-9 * frame_total.mean(dim=1, keepdim=True) + 1e-30
        profile = chroma_t.sum(dim=1) / (frame_total.sum(dim=1) + eps[:, 0])
        shares = chroma_t / (frame_total + eps)
        movement = _std_over_time(shares, shares.mean(dim=1))

        loudness = x.mean(dim=2)  # [b, t]
        centroid_t = folded[:, :, 12] / (folded[:, :, 13] + 1e-30)
        scalars = [
            mean_std,
            _std_over_time(loudness, loudness.mean(dim=1)),
            centroid_t.mean(dim=1),
            _std_over_time(centroid_t, centroid_t.mean(dim=1)),
            contrast_mean.mean(dim=1),
            onset.mean(dim=1),
            _std_over_time(onset, onset.mean(dim=1)),
            pulse,
            at_floor,
        ]
        return {
            "mel_mean": band_mean,
            "mel_std": _centred(band_std),
            "contrast": torch.cat(
                [_centred(contrast_mean), _centred(_std_over_time(contrast_t, contrast_mean))], dim=1
            ),
            "delta": torch.cat([_centred(dabs_mean), _centred(_std_over_time(dabs, dabs_mean))], dim=1),
            "rhythm": rhythm,
            "chroma": torch.cat([profile - 1.0 / 12, movement - _CHROMA_MOVEMENT_NOISE], dim=1),
            "global": torch.stack(scalars, dim=1),
        }


@register_embedder("mel", weights=False)
def make_mel_embedder(config: EmbedderConfig, clip_s: float) -> MelEmbedder:
    """Registry factory: :class:`MelEmbedder` from ``config.options`` and ``config.device``.

    Raises
    ------
    ConfigError
        Unknown or non-integer ``embedder.options``, or an unusable device.
    ParameterError
        ``clip_s`` that is not a positive number of seconds.
    """
    options = dict(config.options or {})
    unknown = sorted(set(options) - set(_OPTION_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown embedder.options for mel: {', '.join(unknown)}; known: {', '.join(_OPTION_KEYS)}"
        )
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"embedder.options.{key} must be a positive integer, got {value!r}")
    if not isinstance(clip_s, (int, float)) or isinstance(clip_s, bool) or not clip_s > 0:
        raise ParameterError(f"clip_s must be a positive number of seconds, got {clip_s!r}")
    params = MelEmbedderParams(clip_s=float(clip_s), **options)
    return MelEmbedder(params, device=config.device)


# --------------------------------------------------------------------------- helpers


def _check_params(params: MelEmbedderParams) -> None:
    if params.n_mels < 64:
        raise ConfigError(f"embedder.options.n_mels must be at least 64 for the mel embedder, got {params.n_mels}")
    if params.hop_length > params.n_fft:
        raise ConfigError(
            f"embedder.options.hop_length ({params.hop_length}) must not exceed n_fft ({params.n_fft})"
        )
    if params.sample_rate_hz < 8000:
        raise ConfigError(f"embedder.options.sample_rate_hz must be at least 8000, got {params.sample_rate_hz}")
    if int(round(params.clip_s * params.sample_rate_hz)) < params.n_fft:
        raise ParameterError(
            f"clip_s ({params.clip_s} s) must hold at least n_fft ({params.n_fft}) samples "
            f"at {params.sample_rate_hz} Hz"
        )


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"embedder.device must be auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("embedder.device is cuda but no CUDA device is available; set embedder.device=auto or cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"embedder.device must be auto, cpu or cuda[:N], got {device!r}")
    return dev


def _band_pool(n_in: int, n_out: int) -> torch.Tensor:
    """Averaging matrix [n_out, n_in] over contiguous, near-equal groups of bands."""
    n_out = min(n_in, n_out)
    pool = np.zeros((n_out, n_in), dtype=np.float32)
    for i, idx in enumerate(np.array_split(np.arange(n_in), n_out)):
        pool[i, idx] = 1.0 / len(idx)
    return torch.from_numpy(pool)


def _chroma_fold(params: MelEmbedderParams) -> torch.Tensor:
    """Matrix [12, n_mels] folding mel-band power into pitch classes C, C#, ..., B.

    Only bands narrower than a semitone between ``_CHROMA_FMIN_HZ`` and ``_CHROMA_FMAX_HZ`` take
    part; each is shared between its two nearest pitch classes. Rows sum to 1.
    """
    from transformers.audio_utils import hertz_to_mel, mel_to_hertz

    nyquist = min(params.sample_rate_hz / 2.0, params.fmax_hz)  # the top edge of the mel bank
    edges_mel = np.linspace(
        hertz_to_mel(0.0, mel_scale="slaney"), hertz_to_mel(nyquist, mel_scale="slaney"), params.n_mels + 2
    )
    edges_hz = mel_to_hertz(edges_mel, mel_scale="slaney")
    centres = edges_hz[1:-1]
    width_semitones = 12.0 * np.log2(np.maximum(edges_hz[2:], 1e-6) / np.maximum(edges_hz[:-2], 1e-6)) / 2.0
    use = (centres >= _CHROMA_FMIN_HZ) & (centres <= _CHROMA_FMAX_HZ) & (width_semitones <= _CHROMA_MAX_BAND_SEMITONES)
    pitch = np.mod(12.0 * np.log2(np.maximum(centres, 1e-6) / 440.0) + 9.0, 12.0)  # 0 = C
    dist = np.abs(pitch[None, :] - np.arange(12)[:, None])
    dist = np.minimum(dist, 12.0 - dist)
    fold = np.maximum(0.0, 1.0 - dist) * use[None, :]
    fold = fold / np.maximum(fold.sum(axis=1, keepdims=True), 1e-12)
    return torch.from_numpy(fold.astype(np.float32))


def _lag_windows(params: MelEmbedderParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive masks (0 inside, -inf outside) over autocorrelation lags 0..max_lag.

    Returns ``(windows [n_lags, max_lag + 1], pulse [max_lag + 1])``: the tempo-profile windows,
    log-spaced between the lag edges, each at least one frame wide; and the pulse-clarity range.
    """
    fps = params.frame_rate_hz
    edges = np.geomspace(*_RHYTHM_LAG_EDGES_S, _N_RHYTHM_LAGS + 1) * fps
    starts = np.ceil(edges[:-1]).astype(int)
    ends = np.maximum(np.ceil(edges[1:]).astype(int), starts + 1)
    max_lag = int(ends[-1])
    windows = np.full((_N_RHYTHM_LAGS, max_lag + 1), -np.inf, dtype=np.float32)
    for i, (a, e) in enumerate(zip(starts, ends)):
        windows[i, a:e] = 0.0
    pulse = np.full(max_lag + 1, -np.inf, dtype=np.float32)
    lo, hi = int(np.ceil(_PULSE_LAGS_S[0] * fps)), int(np.floor(_PULSE_LAGS_S[1] * fps))
    pulse[lo : hi + 1] = 0.0
    return torch.from_numpy(windows), torch.from_numpy(pulse)


def _autocorrelation(env: torch.Tensor, n_lags: int) -> torch.Tensor:
    """Normalised autocorrelation [b, n_lags] of envelopes [b, t] (lag 0 is 1; 0 for a flat one)."""
    z = env - env.mean(dim=1, keepdim=True)
    n = z.shape[1]
    size = max(1 << int(math.ceil(math.log2(2 * n))), n_lags)  # lags past the end read 0
    spec = torch.fft.rfft(z, n=size, dim=1)
    acf = torch.fft.irfft(spec.real.square() + spec.imag.square(), n=size, dim=1)[:, :n_lags]
    energy = acf[:, :1]
    return acf / (energy + 1e-6 * n)


def _std_over_time(v: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Population std over dim 1 of ``v`` [b, t, ...] given its ``mean`` over dim 1 [b, ...]."""
    return (v - mean[:, None]).square_().mean(dim=1).sqrt_()


def _centred(v: torch.Tensor) -> torch.Tensor:
    """Rows of ``v`` [b, k] minus their mean."""
    return v - v.mean(dim=1, keepdim=True)
