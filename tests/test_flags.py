"""Clip flags: silence and applause-like noise are flagged, music of every style is not.

The applause is built here: dense random clap impulses, each a few milliseconds of noise
band-passed to 500 Hz-8 kHz, at random times and amplitudes, 20-60 claps per second.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.signal import butter, sosfilt

from conftest import melody
from soundalike.config import ClipsConfig
from soundalike.errors import ParameterError
from soundalike.features import stft_power
from soundalike.flags import ClipFlags, analysis_frame, clip_flags
from soundalike.sample import STYLES, synthesize_track

SR = 22050
CLIP_S = 10.0
DEFAULTS = ClipsConfig()
THRESHOLDS = dict(
    silence_rms_db=DEFAULTS.silence_rms_db,
    noise_flatness=DEFAULTS.noise_flatness,
    noise_tonality_max=DEFAULTS.noise_tonality_max,
)


def applause(sr: int, seconds: float, *, claps_per_s: float, seed: int) -> np.ndarray:
    """Random claps: 3-12 ms bursts of 500 Hz-8 kHz noise, float32 [n] peaking at 0.5."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n)
    sos = butter(4, [500.0, 8000.0], btype="bandpass", fs=sr, output="sos")
    for _ in range(rng.poisson(claps_per_s * seconds)):
        length = int(rng.uniform(0.003, 0.012) * sr)
        start = int(rng.integers(0, n - length))
        burst = sosfilt(sos, rng.standard_normal(length)) * np.exp(-np.arange(length) / (length / 3))
        out[start : start + length] += rng.uniform(0.2, 1.0) * burst
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def music_of_every_style(seeds=(1, 2)) -> tuple[np.ndarray, list[str]]:
    clips, names = [], []
    for style in STYLES:
        for seed in seeds:
            clips.append(synthesize_track(style, duration_s=CLIP_S, sample_rate_hz=SR, seed=seed))
            names.append(f"{style}#{seed}")
    clips.append(melody(SR, CLIP_S, seed=3))
    names.append("melody")
    return np.stack(clips), names


@pytest.fixture(scope="module")
def music():
    return music_of_every_style()


@pytest.fixture(scope="module")
def claps():
    return np.stack([applause(SR, CLIP_S, claps_per_s=rate, seed=i) for i, rate in enumerate((20, 35, 60))])


def test_applause_is_flagged_and_drums_are_not(music, claps):
    clips, names = music
    flags = clip_flags(np.concatenate([clips, claps]), SR, **THRESHOLDS)
    n_music = len(clips)
    flagged = [name for name, noise, silent in zip(names, flags.is_noise, flags.is_silent) if noise or silent]
    assert flagged == [], f"music flagged: {flagged}"
    assert np.all(flags.is_noise[n_music:]) and not np.any(flags.is_silent[n_music:])
    # The margins behind the decisions, not only the decisions.
    assert np.all(flags.flatness[n_music:] > 0.5)
    assert np.all(flags.tonality[n_music:] < 0.05)
    assert np.all(flags.tonality[:n_music] > 0.5)


def test_drum_heavy_music_stays_unflagged_when_quiet_and_low_passed(music):
    """The noisiest styles keep clear tonal frames at -20 dB and low-passed like a cheap mp3."""
    clips, names = music
    drums = [i for i, name in enumerate(names) if name.split("#")[0] in ("drum_and_bass", "noisy_percussion")]
    sos = butter(6, 7000.0, btype="lowpass", fs=SR, output="sos")
    dull = sosfilt(sos, clips[drums], axis=1).astype(np.float32) * np.float32(0.1)
    flags = clip_flags(dull, SR, **THRESHOLDS)
    assert not np.any(flags.is_noise | flags.is_silent)


def drum_kit_loop(sr: int, seconds: float, *, bpm: float, seed: int) -> np.ndarray:
    """Kick, snare and 16th-note hi-hats -- no bass, no melody: float32 [n]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(int(0.3 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
    snare = 0.7 * rng.standard_normal(t.size) * np.exp(-t * 25)
    hat = 0.3 * np.diff(rng.standard_normal(t.size + 1)) * np.exp(-t * 80)
    out = np.zeros(n + t.size)
    for step in range(int(seconds * bpm / 60 * 4)):
        at = int(step * 60 / bpm / 4 * sr)
        if step % 8 in (0, 5):
            out[at : at + t.size] += kick
        if step % 8 == 4:
            out[at : at + t.size] += snare
        out[at : at + t.size] += rng.uniform(0.5, 1.0) * hat
    return (0.7 * out[:n] / np.abs(out).max()).astype(np.float32)


def test_a_bare_drum_kit_is_not_noise():
    """Hi-hats on every 16th make most frames as flat as applause; the kick's thump is what
    tells a kit from a crowd."""
    loops = np.stack([drum_kit_loop(SR, CLIP_S, bpm=bpm, seed=i) for i, bpm in enumerate((90, 174))])
    flags = clip_flags(loops, SR, **THRESHOLDS)
    assert np.all(flags.flatness > DEFAULTS.noise_flatness)  # flat enough to be noise ...
    assert not np.any(flags.is_noise)  # ... but tonal enough not to be


def test_applause_over_faded_music_is_still_noise(music, claps):
    """A live recording's applause with the band faded 35 dB down under it: the faint notes
    of the music must not count as tonal."""
    clips, _ = music
    level = lambda x: np.sqrt(np.mean(np.square(x, dtype=np.float64)))  # noqa: E731
    mixed = []
    for i in range(len(claps)):
        song = clips[2 * i]
        crowd = claps[i] * np.float32(0.8 * level(song) / level(claps[i]))
        mixed.append(song * np.float32(10 ** (-35 / 20)) + crowd)
    flags = clip_flags(np.stack(mixed), SR, **THRESHOLDS)
    assert np.all(flags.is_noise), flags


def test_digital_silence_and_quiet_hiss_are_silent_not_noise():
    n = int(CLIP_S * SR)
    rng = np.random.default_rng(0)
    clips = np.stack([np.zeros(n, np.float32), (10 ** (-70 / 20) * rng.standard_normal(n)).astype(np.float32)])
    flags = clip_flags(clips, SR, **THRESHOLDS)
    np.testing.assert_array_equal(flags.is_silent, [True, True])
    np.testing.assert_array_equal(flags.is_noise, [False, False])
    assert flags.rms_db[0] <= -150
    assert flags.rms_db[1] == pytest.approx(-70.0, abs=0.2)
    assert flags.flatness[0] == 0.0 and flags.tonality[0] == 0.0


def test_loud_white_noise_is_noise():
    rng = np.random.default_rng(1)
    hiss = (10 ** (-30 / 20) * rng.standard_normal((1, int(CLIP_S * SR)))).astype(np.float32)
    flags = clip_flags(hiss, SR, **THRESHOLDS)
    assert flags.is_noise[0] and not flags.is_silent[0]
    assert flags.flatness[0] == pytest.approx(0.56, abs=0.03)  # exp(-Euler gamma), a periodogram's


def test_padded_tail_rms_uses_real_samples_only(claps):
    real_s = 4.0
    n_real = int(real_s * SR)
    song = melody(SR, real_s, seed=5)
    padded = np.zeros((2, int(CLIP_S * SR)), np.float32)
    padded[0, :n_real] = song
    padded[1, :n_real] = claps[2, :n_real]
    real = np.array([n_real, n_real])

    flags = clip_flags(padded, SR, real_samples=real, **THRESHOLDS)
    unpadded = clip_flags(np.stack([song, claps[2, :n_real]]), SR, **THRESHOLDS)
    expected_db = 10 * np.log10(np.mean(np.square(song, dtype=np.float64)))
    assert flags.rms_db[0] == pytest.approx(expected_db, abs=0.01)
    np.testing.assert_allclose(flags.rms_db, unpadded.rms_db, atol=0.01)
    np.testing.assert_allclose(flags.flatness, unpadded.flatness, atol=0.02)
    np.testing.assert_allclose(flags.tonality, unpadded.tonality, atol=0.05)
    np.testing.assert_array_equal(flags.is_noise, [False, True])

    # Counting the padding would make the clip 4 dB quieter than it is.
    diluted = clip_flags(padded, SR, **THRESHOLDS)
    assert diluted.rms_db[0] == pytest.approx(expected_db + 10 * np.log10(real_s / CLIP_S), abs=0.01)


def test_a_clip_with_no_real_samples_is_silent():
    clips = np.stack([melody(SR, 2.0, seed=1)])
    flags = clip_flags(clips, SR, real_samples=np.array([0]), **THRESHOLDS)
    assert flags.is_silent[0] and not flags.is_noise[0]


def test_thresholds_come_from_the_arguments(claps):
    lenient = clip_flags(claps[:1], SR, silence_rms_db=-50.0, noise_flatness=0.9, noise_tonality_max=0.25)
    assert not lenient.is_noise[0]
    strict_silence = clip_flags(claps[:1], SR, silence_rms_db=0.0, noise_flatness=0.3, noise_tonality_max=0.25)
    assert strict_silence.is_silent[0] and not strict_silence.is_noise[0]


def test_batch_and_single_flags_agree(music, claps):
    clips = np.concatenate([music[0][:3], claps[:2]])
    batch = clip_flags(clips, SR, **THRESHOLDS)
    for i in range(len(clips)):
        single = clip_flags(clips[i : i + 1], SR, **THRESHOLDS)
        for field in ("rms_db", "flatness", "tonality"):
            np.testing.assert_allclose(getattr(single, field)[0], getattr(batch, field)[i], rtol=1e-5, atol=1e-6)


def test_result_shapes_types_and_empty_batch(claps):
    flags = clip_flags(claps, 44100, **THRESHOLDS)  # any rate from 8 kHz up
    assert isinstance(flags, ClipFlags) and len(flags) == len(claps)
    for field in ("rms_db", "flatness", "tonality"):
        assert getattr(flags, field).dtype == np.float32 and getattr(flags, field).shape == (len(claps),)
    assert flags.is_silent.dtype == bool and flags.is_noise.dtype == bool
    with pytest.raises(dataclasses.FrozenInstanceError):
        flags.is_noise = None
    empty = clip_flags(np.zeros((0, 1000), np.float32), SR, **THRESHOLDS)
    assert len(empty) == 0 and empty.is_noise.dtype == bool


@pytest.mark.parametrize(
    "clips, sr, real, message",
    [
        (np.zeros(1000, np.float32), SR, None, "shape \\(n, samples\\)"),
        (np.zeros((1, 1000), np.int16), SR, None, "floating-point"),
        (np.zeros((1, 1000), np.float32), 4000, None, "at least 8000 Hz"),
        (np.zeros((1, 1000), np.float32), 22050.0, None, "sr must be an integer"),
        (np.zeros((2, 1000), np.float32), SR, np.array([10]), "real_samples must be integers of shape \\(2,\\)"),
        (np.zeros((1, 1000), np.float32), SR, np.array([0.5]), "real_samples must be integers"),
        (np.zeros((1, 1000), np.float32), SR, np.array([1001]), "real_samples must lie in \\[0, 1000\\]"),
    ],
)
def test_bad_inputs_are_parameter_errors(clips, sr, real, message):
    with pytest.raises(ParameterError, match=message):
        clip_flags(clips, sr, real_samples=real, **THRESHOLDS)


def test_a_precomputed_spectrogram_gives_the_same_flags(music, claps):
    """What extract_track does: hand clip_flags the STFT it shares with the embedder."""
    clips = np.concatenate([music[0][:3], claps[:2]])
    real = np.array([clips.shape[1], 150000, clips.shape[1], 90000, clips.shape[1]])
    n_fft, hop = analysis_frame(SR)
    power = stft_power(torch.from_numpy(clips), n_fft=n_fft, hop_length=hop)
    shared = clip_flags(clips, SR, real_samples=real, power=power, **THRESHOLDS)
    own = clip_flags(clips, SR, real_samples=real, **THRESHOLDS)
    for field in ("rms_db", "flatness", "tonality", "is_silent", "is_noise"):
        np.testing.assert_array_equal(getattr(shared, field), getattr(own, field))


def test_a_spectrogram_of_other_frames_is_a_parameter_error(claps):
    wrong = stft_power(torch.from_numpy(claps[:1]), n_fft=1024, hop_length=512)
    with pytest.raises(ParameterError, match="power must be stft_power\\(clips, n_fft=2048, hop_length=1024\\)"):
        clip_flags(claps[:1], SR, power=wrong, **THRESHOLDS)


@pytest.mark.parametrize("shared", [False, True], ids=["own-stft", "shared-stft"])
def test_decisive_only_skips_tonality_but_keeps_every_flag(music, claps, shared):
    """What extract_track asks for: tonality only where it decides is_noise, the same flags.

    More clips than one chunk of the own-STFT path, so the chunks' offsets are exercised, with
    silent, applause and music clips after the first chunk.
    """
    clips = np.concatenate([music[0], claps, np.zeros((2, music[0].shape[1]), np.float32), music[0], claps])
    assert len(clips) > 32
    power = None
    if shared:
        n_fft, hop = analysis_frame(SR)
        power = stft_power(torch.from_numpy(clips), n_fft=n_fft, hop_length=hop)
    full = clip_flags(clips, SR, power=power, **THRESHOLDS)
    lazy = clip_flags(clips, SR, power=power, decisive_only=True, **THRESHOLDS)
    for field in ("rms_db", "flatness", "is_silent", "is_noise"):
        np.testing.assert_array_equal(getattr(lazy, field), getattr(full, field))
    decisive = ~full.is_silent & (full.flatness > THRESHOLDS["noise_flatness"])
    # Applause is decisive (and flagged); silence and most music are not.
    assert decisive[len(music[0]) : len(music[0]) + len(claps)].all() and decisive[-len(claps):].all()
    assert not decisive.all() and full.is_silent.sum() == 2
    np.testing.assert_array_equal(np.isnan(lazy.tonality), ~decisive)
    np.testing.assert_array_equal(lazy.tonality[decisive], full.tonality[decisive])
