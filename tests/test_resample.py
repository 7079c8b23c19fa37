"""Resampling on the embedder's device (``embedder.resample_on_device``): soxr's lengths, soxr's
values in the band the embedders look at, safe from decode threads, and the same clips, flags
and vectors through ``extract_tracks`` as the soxr path."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from conftest import melody
from soundalike.audio import load_audio
from soundalike.config import ClipsConfig, EmbedderConfig
from soundalike.embedders import create_embedder
from soundalike.errors import ParameterError
from soundalike.extract import extract_track, extract_tracks
from soundalike.resample import DeviceResampler, resampled_length

CFG = ClipsConfig()


def music(sr: int, seconds: float, seed: int) -> np.ndarray:
    """A melody with a little broadband noise, float32 at ``sr``."""
    rng = np.random.default_rng(seed)
    return (melody(sr, seconds, seed=seed) + 0.01 * rng.standard_normal(int(seconds * sr))).astype(np.float32)


def in_band_snr_db(got: np.ndarray, want: np.ndarray, sr: int, top_hz: float) -> float:
    """Signal-to-difference ratio below ``top_hz``, edges (filter warm-up) left out."""
    edge = sr // 10
    g, w = got[edge:-edge], want[edge:-edge]
    freqs = np.fft.rfftfreq(w.shape[0], 1 / sr)
    band = freqs < top_hz
    signal = np.abs(np.fft.rfft(w))[band]
    diff = np.abs(np.fft.rfft(g - w))[band]
    return float(10 * np.log10((signal**2).sum() / (diff**2).sum()))


@pytest.mark.parametrize("n", [1000, 1001, 4409, 123457])
@pytest.mark.parametrize("rates", [(44100, 48000), (48000, 16000), (22050, 48000), (32000, 22050)])
def test_lengths_are_soxr_lengths(n, rates):
    assert resampled_length(n, *rates) == soxr.resample(np.zeros(n, np.float32), *rates).shape[0]


@pytest.mark.parametrize("rates", [(44100, 48000), (48000, 16000), (44100, 22050), (22050, 48000)])
def test_values_match_soxr_in_the_band_below_the_rolloffs(rates):
    orig, new = rates
    wave = music(orig, 6.0, seed=1)
    got = DeviceResampler("cpu")(wave, orig, new)
    want = soxr.resample(wave, orig, new, quality="HQ")
    assert got.dtype == np.float32 and got.shape == want.shape
    assert in_band_snr_db(got, want, new, 0.7 * min(orig, new) / 2) > 80.0


def test_same_rate_is_the_wave_and_bad_input_is_an_error():
    wave = music(16000, 1.0, seed=2)
    resampler = DeviceResampler("cpu")
    np.testing.assert_array_equal(resampler(wave, 16000, 16000), wave)
    with pytest.raises(ParameterError, match="mono"):
        resampler(np.stack([wave, wave]), 16000, 8000)
    with pytest.raises(ParameterError, match="positive"):
        resampler(wave, 0, 8000)


def test_threads_share_one_resampler():
    """What the decode threads do: many files at several rates, at once, through one resampler."""
    resampler = DeviceResampler("cpu")
    jobs = [(music(sr, 3.0, seed=i), sr) for i, sr in enumerate([44100, 48000, 32000, 44100, 48000, 22050] * 2)]
    alone = [resampler(w, sr, 48000) for w, sr in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda job: DeviceResampler.__call__(resampler, job[0], job[1], 48000), jobs))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def test_load_audio_takes_the_resampler(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, music(44100, 4.0, seed=3), 44100)
    soxr_wave = load_audio(path, 48000)
    device_wave = load_audio(path, 48000, resample=DeviceResampler("cpu"))
    assert device_wave.shape == soxr_wave.shape
    assert in_band_snr_db(device_wave, soxr_wave, 48000, 15000.0) > 80.0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the device machine)"))])
def test_extract_tracks_resampling_on_the_device_gives_the_soxr_path_results(tmp_path, device):
    """Files at 44.1 and 48 kHz through decode threads that leave resampling to the device: the
    clips and flags of extract_track (soxr), and vectors equal to float rounding of the input."""
    sources = []
    for i, sr in enumerate((44100, 48000, 44100)):
        path = tmp_path / f"t{i}.flac"
        sf.write(path, music(sr, 23.0 + 4 * i, seed=10 + i), sr)
        sources.append(path)
    # hop 512: the mel embedder's own STFT, so extract_tracks takes the decode-thread path on a CPU
    embedder = create_embedder(EmbedderConfig(name="mel", device=device, options={"hop_length": 512}),
                               clip_s=CFG.clip_s)
    reference = create_embedder(EmbedderConfig(name="mel", device="cpu", options={"hop_length": 512}),
                                clip_s=CFG.clip_s)
    got = list(extract_tracks(sources, embedder, CFG, batch_size=2, decode_workers=2, resample_on_device=True))
    assert [i for i, _ in got] == [0, 1, 2]
    for i, result in got:
        want = extract_track(sources[i], reference, CFG)
        assert len(result) == len(want) >= 2
        np.testing.assert_allclose(result.start_s, want.start_s)
        np.testing.assert_allclose(result.end_s, want.end_s)
        np.testing.assert_array_equal(result.is_silent, want.is_silent)
        np.testing.assert_array_equal(result.is_noise, want.is_noise)
        np.testing.assert_allclose(result.rms_db, want.rms_db, atol=1e-3)
        np.testing.assert_allclose(result.vectors, want.vectors, atol=2e-3)
