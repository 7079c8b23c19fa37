import numpy as np
import pytest

from soundalike.clips import chunk, clip_starts
from soundalike.errors import ParameterError


def test_clips_cover_the_track_and_keep_a_long_tail_padded():
    sr = 1000
    wave = np.arange(25 * sr, dtype=np.float32)
    clips = chunk(wave, sr, clip_s=10.0, min_tail_s=5.0)
    assert clips.start_s.tolist() == [0.0, 10.0, 20.0]
    assert clips.end_s.tolist() == [10.0, 20.0, 25.0]
    assert clips.audio.shape == (3, 10 * sr)
    np.testing.assert_array_equal(clips.audio[1], wave[10 * sr : 20 * sr])
    np.testing.assert_array_equal(clips.audio[2, : 5 * sr], wave[20 * sr :])
    assert not clips.audio[2, 5 * sr :].any()  # zero padding


def test_short_tail_is_dropped_and_short_track_is_one_or_no_clip():
    sr = 100
    assert chunk(np.ones(24 * sr, np.float32), sr, clip_s=10, min_tail_s=5).start_s.tolist() == [0.0, 10.0]
    assert len(chunk(np.ones(6 * sr, np.float32), sr, clip_s=10, min_tail_s=5)) == 1
    assert len(chunk(np.ones(4 * sr, np.float32), sr, clip_s=10, min_tail_s=5)) == 0


def test_overlapping_hops():
    starts = clip_starts(30.0, clip_s=10.0, hop_s=5.0, min_tail_s=2.0)
    assert starts.tolist() == [0.0, 5.0, 10.0, 15.0, 20.0]
    starts = clip_starts(33.0, clip_s=10.0, hop_s=5.0, min_tail_s=2.0)
    assert starts.tolist() == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]


def test_clip_starts_agrees_with_chunk():
    sr = 200
    for seconds in (3.0, 9.99, 10.0, 17.3, 41.0):
        wave = np.zeros(int(seconds * sr), np.float32)
        for hop in (10.0, 2.5):
            expected = clip_starts(seconds, clip_s=10.0, hop_s=hop, min_tail_s=2.0)
            np.testing.assert_array_equal(chunk(wave, sr, clip_s=10.0, hop_s=hop, min_tail_s=2.0).start_s, expected)


@pytest.mark.parametrize(
    "kwargs",
    [{"clip_s": 0}, {"clip_s": 10, "hop_s": 11}, {"clip_s": 10, "hop_s": -1}, {"clip_s": 10, "min_tail_s": 11}],
)
def test_bad_policy_raises(kwargs):
    with pytest.raises(ParameterError):
        chunk(np.zeros(1000, np.float32), 100, **kwargs)


def test_non_mono_or_integer_waves_are_rejected():
    with pytest.raises(ParameterError, match="mono"):
        chunk(np.zeros((2, 1000), np.float32), 100)
    with pytest.raises(ParameterError, match="floating"):
        chunk(np.zeros(1000, np.int16), 100)
