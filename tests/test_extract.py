"""extract_track: decode, chunk, flag and embed a file -- the path the batch job and the query
model share. With the default mel embedder the flags and the embedder share one STFT per batch;
what a user sees must be what the separate calls give."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import melody
from soundalike.audio import load_audio
from soundalike.clips import chunk
from soundalike.config import ClipsConfig, EmbedderConfig
from soundalike.embedders import create_embedder
from soundalike.extract import extract_track
from soundalike.errors import ParameterError
from soundalike.flags import clip_flags

SR = 22050
CFG = ClipsConfig()


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    """27 s: 12 s of melody, 5 s of digital silence, 10 s of hiss; the 7 s tail is padded."""
    rng = np.random.default_rng(4)
    wave = np.concatenate([
        melody(SR, 12.0, seed=8),
        np.zeros(5 * SR, np.float32),
        (0.1 * rng.standard_normal(10 * SR)).astype(np.float32),
    ])
    path = tmp_path_factory.mktemp("extract") / "track.flac"
    sf.write(path, wave, SR)
    return path


def separate_calls(path, embedder):
    """What extract_track must equal: chunk, clip_flags and embedder.embed called one by one."""
    clips = chunk(load_audio(path, embedder.sample_rate_hz), embedder.sample_rate_hz,
                  clip_s=CFG.clip_s, hop_s=CFG.hop_s, min_tail_s=CFG.min_tail_s)
    real = np.round((clips.end_s - clips.start_s) * embedder.sample_rate_hz).astype(np.int64)
    flags = clip_flags(clips.audio, embedder.sample_rate_hz, silence_rms_db=CFG.silence_rms_db,
                       noise_flatness=CFG.noise_flatness, noise_tonality_max=CFG.noise_tonality_max,
                       real_samples=real)
    return clips, flags, embedder.embed(clips.audio)


@pytest.mark.parametrize("options", [{}, {"hop_length": 512}], ids=["shared-stft", "own-stft"])
def test_extract_track_gives_what_the_separate_calls_give(track, options):
    embedder = create_embedder(EmbedderConfig(name="mel", device="cpu", options=options), clip_s=CFG.clip_s)
    got = extract_track(track, embedder, CFG, batch_size=2)
    clips, flags, vectors = separate_calls(track, embedder)
    assert len(got) == len(clips) == 3
    np.testing.assert_allclose(got.start_s, clips.start_s)
    np.testing.assert_allclose(got.end_s, clips.end_s)
    np.testing.assert_array_equal(got.is_silent, flags.is_silent)
    np.testing.assert_array_equal(got.is_noise, flags.is_noise)
    np.testing.assert_allclose(got.rms_db, flags.rms_db, atol=1e-4)
    # Not bit for bit: BLAS and FFT kernels may pick another code path for another batch shape
    # (on an AMD EPYC the 1-clip batch differs from the 3-clip one by ~1e-7).
    np.testing.assert_allclose(got.vectors, vectors, rtol=1e-5, atol=1e-6)
    # Melody, then melody-silence-hiss: indexable; the last clip (7 s of hiss, padded) is noise.
    np.testing.assert_array_equal(got.indexable, [True, True, False])


def test_batch_size_does_not_change_the_result(track):
    embedder = create_embedder(EmbedderConfig(name="mel", device="cpu"), clip_s=CFG.clip_s)
    one = extract_track(track, embedder, CFG, batch_size=1)
    all_at_once = extract_track(track, embedder, CFG, batch_size=32)
    np.testing.assert_allclose(one.vectors, all_at_once.vectors, rtol=1e-5, atol=1e-6)  # see above
    np.testing.assert_allclose(one.rms_db, all_at_once.rms_db, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(one.is_noise, all_at_once.is_noise)


def _same(a, b):
    np.testing.assert_allclose(a.start_s, b.start_s)
    np.testing.assert_allclose(a.end_s, b.end_s)
    np.testing.assert_allclose(a.rms_db, b.rms_db, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(a.is_silent, b.is_silent)
    np.testing.assert_array_equal(a.is_noise, b.is_noise)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)
    assert a.duration_s == pytest.approx(b.duration_s)


@pytest.mark.parametrize("options", [{}, {"hop_length": 512}], ids=["serial-path", "cross-track-batches"])
def test_extract_tracks_gives_extract_track_results_in_order(track, tmp_path, options):
    """Decode threads + batches spanning files give what extract_track gives per file, in input
    order; a bad file yields its error, a too-short one no clips, a long one goes window by window."""
    from soundalike.errors import AudioDecodeError
    from soundalike.extract import extract_tracks

    short = tmp_path / "short.wav"
    sf.write(short, melody(SR, 3.0, seed=2), SR)  # under min_tail_s: no clips
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all" * 100)
    other = tmp_path / "other.ogg"
    sf.write(other, melody(SR, 31.0, seed=5), SR)
    sources = [track, bad, short, other, track.read_bytes(), other]
    embedder = create_embedder(EmbedderConfig(name="mel", device="cpu", options=options), clip_s=CFG.clip_s)
    # batch 2 splits files across batches; window_s 20 sends the 27 s and 31 s files window by window
    for window_s in (600.0, 20.0):
        got = list(extract_tracks(sources, embedder, CFG, batch_size=2, decode_workers=2, window_s=window_s))
        assert [i for i, _ in got] == list(range(len(sources)))
        assert isinstance(got[1][1], AudioDecodeError)
        assert len(got[2][1]) == 0 and got[2][1].vectors.shape == (0, embedder.dim)
        for i in (0, 3, 4, 5):
            _same(got[i][1], extract_track(sources[i], embedder, CFG, batch_size=3))
        assert len(got[3][1]) == 3


def test_extract_tracks_rejects_bad_worker_counts(track):
    from soundalike.extract import extract_tracks

    embedder = create_embedder(EmbedderConfig(name="mel", device="cpu"), clip_s=CFG.clip_s)
    with pytest.raises(ParameterError, match="decode_workers"):
        list(extract_tracks([track], embedder, CFG, decode_workers=-1))


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (runs on the device machine)")
def test_extract_tracks_on_cuda_matches_the_cpu_path(track, tmp_path):
    """On a GPU the flags' spectrogram is computed on the device and batches are staged in pinned
    memory; flags must equal the CPU path's and vectors agree to float rounding."""
    from soundalike.extract import extract_tracks

    other = tmp_path / "other.flac"
    sf.write(other, melody(SR, 31.0, seed=5), SR)
    sources = [track, other, track]
    gpu = create_embedder(EmbedderConfig(name="mel", device="cuda"), clip_s=CFG.clip_s)
    cpu = create_embedder(EmbedderConfig(name="mel", device="cpu"), clip_s=CFG.clip_s)
    got = list(extract_tracks(sources, gpu, CFG, batch_size=2, decode_workers=2))
    for i, result in got:
        want = extract_track(sources[i], cpu, CFG)
        np.testing.assert_array_equal(result.is_silent, want.is_silent)
        np.testing.assert_array_equal(result.is_noise, want.is_noise)
        np.testing.assert_allclose(result.rms_db, want.rms_db, atol=1e-3)
        np.testing.assert_allclose(result.vectors, want.vectors, atol=2e-3)


@pytest.mark.parametrize("workers", [0, 2], ids=["in-turn", "decode-threads"])
def test_a_file_over_the_time_limit_is_an_error_and_the_others_go_on(track, tmp_path, workers):
    """catalogue.decode_timeout_s: a slow file yields an AudioDecodeError naming the limit; the
    files after it are still extracted."""
    from soundalike.errors import AudioDecodeError
    from soundalike.extract import extract_tracks

    slow = tmp_path / "slow.flac"
    sf.write(slow, melody(SR, 600.0, seed=3), SR)  # 10 minutes: far over a 1 ms limit
    embedder = create_embedder(EmbedderConfig(name="mel", device="cpu", options={"hop_length": 512}),
                               clip_s=CFG.clip_s)
    got = dict(extract_tracks([slow], embedder, CFG, decode_workers=workers, time_limit_s=1e-3))
    assert isinstance(got[0], AudioDecodeError) and "decode_timeout_s=0.001" in str(got[0])
    got = dict(extract_tracks([slow, track], embedder, CFG, decode_workers=workers, time_limit_s=60.0))
    assert len(got[0]) == 60 and len(got[1]) == 3
