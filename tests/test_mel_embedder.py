"""The model-free ``mel`` embedder: registry, contract, robustness and style grouping.

The audio is made here: styled tracks from :func:`soundalike.sample.synthesize_track` at the
embedder's 22.05 kHz; the mp3 copies are encoded at 44.1 kHz and resampled back, as a decoded
catalogue file would be.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from conftest import melody
from soundalike.config import EmbedderConfig
from soundalike.embedders import available_embedders, create_embedder
from soundalike.embedders.mel import MelEmbedder, MelEmbedderParams, mel_embedder_version
from soundalike.errors import ConfigError, ParameterError
from soundalike.features import power_spectrogram, stft_power
from soundalike.sample import STYLES, synthesize_track

SOURCE_SR = 44100
SR = 22050
CLIP_S = 10.0


def _to_embedder_rate(wave_44k: np.ndarray) -> np.ndarray:
    out = soxr.resample(wave_44k, SOURCE_SR, SR).astype(np.float32)
    n = int(CLIP_S * SR)
    return np.pad(out, (0, max(0, n - out.shape[0])))[:n]


def _mp3_roundtrip(wave_22k: np.ndarray) -> np.ndarray:
    """Encode as a 44.1 kHz mp3 (libsndfile's default VBR quality) and decode back to 22.05 kHz."""
    buffer = io.BytesIO()
    sf.write(buffer, soxr.resample(wave_22k, SR, SOURCE_SR), SOURCE_SR, format="MP3")
    decoded, sr = sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")
    assert sr == SOURCE_SR
    return _to_embedder_rate(decoded)


@pytest.fixture(scope="module")
def embedder() -> MelEmbedder:
    return create_embedder(EmbedderConfig(name="mel", device="cpu"), clip_s=CLIP_S)


@pytest.fixture(scope="module")
def styled_clips() -> tuple[np.ndarray, np.ndarray]:
    """Three clips (different seeds: other tempo, key, patterns) of every style."""
    clips, labels = [], []
    for style in STYLES:
        for seed in range(3):
            clips.append(synthesize_track(style, duration_s=CLIP_S, sample_rate_hz=SR, seed=100 + seed))
            labels.append(style)
    return np.stack(clips), np.array(labels)


# --------------------------------------------------------------------------- registry and config


def test_registry_builds_the_mel_embedder_from_default_config():
    emb = create_embedder(EmbedderConfig(name="mel"), clip_s=10.0)
    assert isinstance(emb, MelEmbedder)
    assert "mel" in available_embedders()
    assert emb.sample_rate_hz == 22050 and emb.clip_samples == 220500
    assert 200 <= emb.dim <= 400
    assert emb.key == f"mel@{emb.version}" and emb.version.startswith("1-") and len(emb.version) == 12
    assert emb.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_unknown_embedder_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown embedder 'nope'.*mel"):
        create_embedder(EmbedderConfig(name="nope"), clip_s=10.0)


@pytest.mark.parametrize(
    "config, message",
    [
        (EmbedderConfig(options={"n_mel": 64}), "unknown embedder.options for mel: n_mel"),
        (EmbedderConfig(options={"n_mels": "many"}), "n_mels must be a positive integer"),
        (EmbedderConfig(options={"hop_length": 0}), "hop_length must be a positive integer"),
        (EmbedderConfig(options={"n_mels": 32}), "n_mels must be at least 64"),
        (EmbedderConfig(options={"hop_length": 4096}), "must not exceed n_fft"),
        (EmbedderConfig(device="tpu"), "embedder.device must be auto, cpu or cuda"),
    ],
)
def test_bad_options_and_devices_are_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        create_embedder(config, clip_s=10.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error_that_says_what_to_set():
    with pytest.raises(ConfigError, match="set embedder.device=auto or cpu"):
        create_embedder(EmbedderConfig(device="cuda"), clip_s=10.0)


def test_options_override_the_analysis_and_change_the_version():
    default = create_embedder(EmbedderConfig(), clip_s=10.0)
    options = {"sample_rate_hz": 16000, "n_mels": 96, "hop_length": 512}
    custom = create_embedder(EmbedderConfig(options=options), clip_s=10.0)
    assert custom.sample_rate_hz == 16000 and custom.clip_samples == 160000
    assert custom.version != default.version
    assert create_embedder(EmbedderConfig(), clip_s=10.0).version == default.version
    assert create_embedder(EmbedderConfig(), clip_s=5.0).version != default.version
    vectors = custom.embed(np.stack([melody(16000, 10.0, seed=1)]))
    assert vectors.shape == (1, custom.dim) and np.all(np.isfinite(vectors))


def test_version_follows_the_feature_revision(monkeypatch):
    import soundalike.embedders.mel as mel_module

    before = mel_embedder_version(MelEmbedderParams())
    monkeypatch.setattr(mel_module, "FEATURE_REVISION", mel_module.FEATURE_REVISION + 1)
    assert mel_embedder_version(MelEmbedderParams()) != before


def test_clip_shorter_than_one_window_is_a_parameter_error():
    with pytest.raises(ParameterError, match="clip_s"):
        create_embedder(EmbedderConfig(), clip_s=0.01)
    with pytest.raises(ParameterError, match="clip_s"):
        create_embedder(EmbedderConfig(), clip_s=-1.0)


# --------------------------------------------------------------------------- the embed contract


def test_wrong_clip_length_is_a_parameter_error(embedder):
    with pytest.raises(ParameterError, match=r"expects clips of shape \(n, 220500\)"):
        embedder.embed(np.zeros((2, 22050 * 5), dtype=np.float32))
    with pytest.raises(ParameterError):
        embedder.embed(np.zeros(220500, dtype=np.float32))


def test_vectors_are_finite_unit_length_and_deterministic(embedder, styled_clips):
    clips, _ = styled_clips
    vectors = embedder.embed(clips)
    assert vectors.shape == (len(clips), embedder.dim) and vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors, embedder.embed(clips))
    assert embedder.embed(clips[:0]).shape == (0, embedder.dim)


def test_batch_and_single_embeddings_are_identical(embedder, styled_clips):
    clips, _ = styled_clips
    batch = embedder.embed(clips[::3])
    single = np.stack([embedder.embed(clip[None])[0] for clip in clips[::3]])
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_silent_hiss_and_padded_clips_give_finite_vectors(embedder):
    n = embedder.clip_samples
    rng = np.random.default_rng(0)
    padded = np.zeros(n, dtype=np.float32)
    padded[: n // 3] = melody(SR, CLIP_S / 3, seed=2)
    clips = np.stack([
        np.zeros(n, dtype=np.float32),
        (10 ** (-70 / 20) * rng.standard_normal(n)).astype(np.float32),
        padded,
        np.full(n, 0.5, dtype=np.float32),  # DC offset: all energy in the lowest band
    ])
    vectors = embedder.embed(clips)
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- what the vectors mean


def test_gain_change_barely_moves_vector(embedder, styled_clips):
    clips, _ = styled_clips
    reference_clips = clips[::3] * np.float32(0.5)  # -7 dBFS peaks: room for +6 dB unclipped
    reference = embedder.embed(reference_clips)
    for gain_db in (-6.0, 6.0):
        cosine = np.sum(embedder.embed(reference_clips * np.float32(10 ** (gain_db / 20))) * reference, axis=1)
        assert cosine.min() > 0.9999, (gain_db, cosine)


@pytest.mark.parametrize("distortion", ["mp3", "gain", "noise"])
def test_distorted_copy_stays_nearest_neighbour(embedder, styled_clips, distortion):
    """An mp3 re-encode, a quieter copy or a copy with hiss (40 dB below the music) of a clip
    of each style finds that clip first among 18 clips -- including two more of its style."""
    clips, _ = styled_clips
    catalogue = embedder.embed(clips)
    queries = clips[::3]
    if distortion == "mp3":
        queries = np.stack([_mp3_roundtrip(q) for q in queries])
    elif distortion == "gain":
        queries = queries * np.float32(10 ** (-4.5 / 20))
    else:
        rng = np.random.default_rng(7)
        rms = np.sqrt(np.mean(queries.astype(np.float64) ** 2, axis=1, keepdims=True))
        queries = (queries + 0.01 * rms * rng.standard_normal(queries.shape)).astype(np.float32)
    sims = embedder.embed(queries) @ catalogue.T
    expected = np.arange(0, len(clips), 3)
    np.testing.assert_array_equal(sims.argmax(axis=1), expected)
    own = sims[np.arange(len(expected)), expected]
    assert own.min() > 0.99, own
    others = sims.copy()
    others[np.arange(len(expected)), expected] = -1
    assert np.all(own - others.max(axis=1) > 0.02), own - others.max(axis=1)


def test_same_style_clips_are_closer_than_other_styles(embedder, styled_clips):
    clips, labels = styled_clips
    vectors = embedder.embed(clips)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, np.nan)
    for i, style in enumerate(labels):
        same = np.nanmean(sims[i, labels == style])
        for other in set(STYLES) - {style}:
            assert same > np.nanmean(sims[i, labels == other]) + 0.05, (style, other)
    nearest = np.nanargmax(sims, axis=1)
    assert np.all(labels[nearest] == labels)


# --------------------------------------------------------------------------- a shared spectrogram


def test_the_fast_stft_matches_torch_stft():
    """stft_power frames and pads exactly as torch.stft(center=True), frames first."""
    rng = np.random.default_rng(3)
    # A clip; other hops; shorter than a window; shorter than half a window (zero padding); odd n_fft.
    cases = [(220500, 2048, 1024), (5000, 2048, 512), (1500, 2048, 1024), (700, 2048, 1024), (9000, 1001, 300)]
    for n, n_fft, hop in cases:
        x = torch.from_numpy(rng.standard_normal((2, n)).astype(np.float32))
        expected = power_spectrogram(x, n_fft=n_fft, hop_length=hop, center=True).transpose(1, 2)
        got = stft_power(x, n_fft=n_fft, hop_length=hop)
        assert got.shape == expected.shape, (n, n_fft, hop)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


def test_embed_power_gives_the_vectors_of_embed(embedder, styled_clips):
    clips, _ = styled_clips
    power = stft_power(torch.from_numpy(clips[::3]), n_fft=2048, hop_length=1024)
    np.testing.assert_array_equal(embedder.embed_power(power.to(embedder.device)), embedder.embed(clips[::3]))
    assert embedder.embed_power(power[:0]).shape == (0, embedder.dim)


def test_embed_power_of_other_frames_is_a_parameter_error(embedder, styled_clips):
    clips, _ = styled_clips
    power = stft_power(torch.from_numpy(clips[:1]), n_fft=2048, hop_length=512)
    with pytest.raises(ParameterError, match=r"expects power spectra of shape \(n, 216, 1025\)"):
        embedder.embed_power(power)
