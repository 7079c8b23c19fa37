import subprocess

import numpy as np
import pytest
import soundfile as sf

from conftest import melody, needs_ffmpeg
from soundalike.audio import load_audio, probe_audio
from soundalike.errors import AudioDecodeError, ParameterError, SoundalikeError


def test_stereo_wav_is_averaged_to_mono_and_resampled(write_audio):
    sr = 44100
    left = melody(sr, 3.0, seed=1)
    right = melody(sr, 3.0, seed=2)
    path = write_audio("stereo.wav", np.stack([left, right], axis=1), sr, subtype="FLOAT")
    same_rate = load_audio(path, sr)
    np.testing.assert_allclose(same_rate, (left + right) / 2, atol=1e-6)
    resampled = load_audio(path, 22050)
    assert resampled.dtype == np.float32 and resampled.ndim == 1
    assert abs(resampled.shape[0] - 3.0 * 22050) <= 2


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_multichannel_files_mix_down_to_exactly_the_channels_mean(write_audio, channels):
    sr = 16000
    data = np.stack([melody(sr, 2.0, seed=s) * (0.2 + 0.15 * s) for s in range(channels)], axis=1)
    path = write_audio(f"ch{channels}.wav", data, sr, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, sr), data.astype(np.float32).mean(axis=1, dtype=np.float32))


def test_bytes_and_path_decode_identically(write_audio):
    path = write_audio("a.flac", melody(32000, 2.0), 32000)
    np.testing.assert_array_equal(load_audio(path, 16000), load_audio(path.read_bytes(), 16000))


@pytest.mark.parametrize("fmt,kwargs", [("wav", {}), ("flac", {}), ("ogg", {"subtype": "VORBIS"}), ("mp3", {})])
def test_every_libsndfile_format_decodes_to_the_same_music(write_audio, fmt, kwargs):
    sr = 44100
    wave = melody(sr, 4.0, seed=3)
    path = write_audio(f"x.{fmt}", wave, sr, **kwargs)
    decoded = load_audio(path, sr)
    assert abs(decoded.shape[0] - wave.shape[0]) < 0.1 * sr
    n = min(decoded.shape[0], wave.shape[0])
    # Lossy codecs shift by their encoder delay; compare with the best small lag.
    best = max(
        np.corrcoef(wave[2000 : n - 4000], decoded[2000 + lag : n - 4000 + lag])[0, 1]
        for lag in range(0, 2400, 8)
    )
    assert best > 0.9


def test_offset_and_duration_decode_only_that_window(write_audio):
    sr = 22050
    wave = melody(sr, 20.0, seed=4)
    path = write_audio("long.flac", wave, sr)
    window = load_audio(path, sr, offset_s=12.5, duration_s=3.0)
    np.testing.assert_allclose(window, wave[int(12.5 * sr) : int(15.5 * sr)], atol=1e-4)
    tail = load_audio(path, sr, offset_s=18.0)
    assert tail.shape[0] == 2 * sr


def test_probe_reads_the_header(write_audio):
    path = write_audio("p.wav", np.zeros((48000 * 2, 2), np.float32) + 0.1, 48000)
    info = probe_audio(path)
    assert (info.sample_rate_hz, info.channels, info.frames, info.format) == (48000, 2, 96000, "wav")
    assert info.duration_s == pytest.approx(2.0)


@needs_ffmpeg
def test_m4a_falls_back_to_ffmpeg(write_audio, tmp_path):
    sr = 44100
    wav = write_audio("src.wav", melody(sr, 3.0, seed=5), sr)
    m4a = tmp_path / "song.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(m4a)], check=True)
    decoded = load_audio(m4a, 22050)
    assert abs(decoded.shape[0] / 22050 - 3.0) < 0.1
    assert np.abs(decoded).max() > 0.3
    assert probe_audio(m4a).format == "m4a"
    # As bytes (an upload) too: ffmpeg writes an m4a's index after the audio, read through a pipe.
    thirty = tmp_path / "thirty.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=30",
                    "-ac", "2", "-c:a", "aac", "-b:a", "128k", str(thirty)], check=True)
    for source in (m4a.read_bytes(), thirty.read_bytes()):
        assert probe_audio(source).duration_s == pytest.approx(3.0 if len(source) < 100_000 else 30.0, abs=0.1)
    window = load_audio(m4a, 22050, offset_s=1.0, duration_s=1.0)
    assert abs(window.shape[0] - 22050) < 500


def test_m4a_without_ffmpeg_names_ffmpeg(write_audio, tmp_path, monkeypatch):
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    monkeypatch.setattr("soundalike.audio.shutil.which", lambda name: None)
    with pytest.raises(AudioDecodeError, match="ffmpeg is not on PATH") as err:
        load_audio(path, 22050)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.wav", b"", "empty"),
        ("text.mp3", b"this is a shopping list, not an mp3\n" * 20, "not a readable audio file"),
        ("random.flac", np.random.default_rng(0).bytes(4096), "not a readable audio file"),
    ],
)
def test_bad_files_raise_a_typed_error_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=reason) as err:
        load_audio(path, 16000)
    assert str(path) in str(err.value)
    with pytest.raises(AudioDecodeError):
        probe_audio(path)


def test_truncated_flac_header_is_a_decode_error(write_audio):
    path = write_audio("cut.flac", melody(44100, 2.0), 44100)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioDecodeError):
        load_audio(path, 44100)


def test_missing_file_directory_and_empty_bytes(tmp_path):
    with pytest.raises(AudioDecodeError, match="does not exist"):
        load_audio(tmp_path / "nope.wav", 16000)
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioDecodeError, match="directory"):
        load_audio(tmp_path / "dir.wav", 16000)
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(b"", 16000)


def test_offset_past_the_end_is_a_decode_error(write_audio):
    path = write_audio("short.wav", melody(16000, 1.0), 16000)
    with pytest.raises(AudioDecodeError, match="no audio samples after offset"):
        load_audio(path, 16000, offset_s=5.0)


@pytest.mark.parametrize("kwargs", [{"sr": 0}, {"sr": 16000, "offset_s": -1}, {"sr": 16000, "duration_s": 0}])
def test_bad_parameters_raise_parameter_error(write_audio, kwargs):
    path = write_audio("ok.wav", melody(16000, 1.0), 16000)
    with pytest.raises(ParameterError):
        load_audio(path, **kwargs)
    assert issubclass(ParameterError, SoundalikeError)


@pytest.mark.parametrize("fmt,subtype", [("FLAC", None), ("MP3", "MPEG_LAYER_III"), ("WAV", "PCM_16")])
@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "file"])
def test_a_cut_off_file_is_a_truncation_error_not_a_shorter_track(fmt, subtype, as_bytes, tmp_path):
    """An interrupted copy must not be indexed as a shorter song: FLAC loses sync, MP3 ends long
    before its Xing header's length, a WAV's data chunk declares more than the file holds."""
    import io

    from conftest import melody

    buf = io.BytesIO()
    sf.write(buf, melody(44100, 20.0, seed=1), 44100, format=fmt, subtype=subtype)
    cut = buf.getvalue()[: int(len(buf.getvalue()) * 0.4)]
    source = cut
    if not as_bytes:
        source = tmp_path / f"cut.{fmt.lower()}"
        source.write_bytes(cut)
    with pytest.raises(AudioDecodeError, match="truncated|lost sync"):
        load_audio(source, 22050)


def test_a_wav_whose_header_overstates_its_length_is_refused_and_an_honest_one_reads():
    import io

    from conftest import melody

    buf = io.BytesIO()
    sf.write(buf, melody(22050, 12.0, seed=2), 22050, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    assert load_audio(bytes(data), 22050).shape[0] == 12 * 22050
    at = data.find(b"data")
    data[at + 4 : at + 8] = (int.from_bytes(data[at + 4 : at + 8], "little") * 10).to_bytes(4, "little")
    with pytest.raises(AudioDecodeError, match="WAV header declares 120.00 s"):
        load_audio(bytes(data), 22050)
    data[at + 4 : at + 8] = (0xFFFFFFFF).to_bytes(4, "little")  # a streaming writer's "unknown length"
    assert load_audio(bytes(data), 22050).shape[0] == 12 * 22050


def test_too_few_samples_to_survive_resampling_is_a_decode_error():
    """One sample at 22.05 kHz resamples to none at 8 kHz: an error, never an empty wave
    (found by the hostile-input property test)."""
    import io

    buffer = io.BytesIO()
    sf.write(buffer, np.array([0.25], np.float32), 22050, format="WAV", subtype="PCM_16")
    assert load_audio(buffer.getvalue(), 22050).shape == (1,)
    with pytest.raises(AudioDecodeError, match="leave no audio at 8000 Hz"):
        load_audio(buffer.getvalue(), 8000)


def _long_m4a(tmp_path, hours: float):
    """A ``hours``-long low-bitrate AAC m4a, made fast: one minute encoded, then looped by stream copy."""
    minute = tmp_path / "minute.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=60",
                    "-c:a", "aac", "-b:a", "8k", str(minute)], check=True)
    long = tmp_path / "long.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", str(int(hours * 60) - 1), "-i", str(minute),
                    "-c", "copy", str(long)], check=True)
    return long


@needs_ffmpeg
def test_a_two_hour_m4a_query_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    from soundalike.search import check_query_length

    long = _long_m4a(tmp_path, 2.0)

    def no_decode(*args, **kwargs):
        raise AssertionError("the whole file was decoded to learn its length")

    monkeypatch.setattr("soundalike.audio._pydub_segment", no_decode)
    for source in (long, long.read_bytes()):
        info = probe_audio(source)
        assert (info.sample_rate_hz, info.channels) == (8000, 1)
        assert info.duration_s == pytest.approx(7200, abs=10)
        with pytest.raises(ParameterError, match="max_query_seconds=600"):
            check_query_length(source, 600.0)


def _zero_channel_wav() -> bytes:
    import struct

    data = bytes(200)
    fmt = struct.pack("<HHIIHH", 1, 0, 8000, 16000, 2, 16)  # PCM, 0 channels
    return (b"RIFF" + struct.pack("<I", 4 + 8 + 16 + 8 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["png", "silent_video", "zero_channel_wav", "text_as_mp3"])
def test_files_without_playable_audio_get_a_reason_a_user_understands(tmp_path, kind):
    if kind == "png":
        path = tmp_path / "cover.png"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=16x16",
                        "-frames:v", "1", str(path)], check=True)
        reason = "no audio stream"
    elif kind == "silent_video":
        path = tmp_path / "clip.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=s=64x64:d=1", "-an",
                        "-c:v", "mpeg4", str(path)], check=True)
        reason = "no audio stream"
    elif kind == "zero_channel_wav":
        path = tmp_path / "zero.wav"
        path.write_bytes(_zero_channel_wav())
        reason = "not a readable audio file"
    else:
        path = tmp_path / "text.mp3"
        path.write_bytes(b"this is a shopping list, not an mp3\n" * 20)
        reason = "not a readable audio file"
    for source in (path, path.read_bytes()):
        for decode in (probe_audio, lambda s: load_audio(s, 16000)):
            with pytest.raises(AudioDecodeError, match=reason) as err:
                decode(source)
            message = str(err.value)
            for leak in ("list index", "Expecting property", "possibly a pipe", "Traceback"):
                assert leak not in message, message


def test_an_offset_far_past_the_end_is_a_decode_error_naming_the_file(write_audio):
    path = write_audio("short.wav", melody(16000, 1.0), 16000)
    for offset_s in (1e308, 1e20, 2.0):
        with pytest.raises(AudioDecodeError, match=r"short\.wav: no audio samples after offset .* 1\.00 s long"):
            load_audio(path, 16000, offset_s=offset_s)
    # A duration beyond the end reads to the end.
    assert load_audio(path, 16000, offset_s=0.5, duration_s=1e308).shape == (8000,)
    with pytest.raises(ParameterError, match="start offset .* finite number of seconds >= 0, got inf"):
        load_audio(path, 16000, offset_s=float("inf"))


@needs_ffmpeg
def test_an_offset_far_past_the_end_of_an_m4a_is_a_decode_error(tmp_path):
    m4a = tmp_path / "s.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=3",
                    "-c:a", "aac", str(m4a)], check=True)
    with pytest.raises(AudioDecodeError, match=r"s\.m4a: no audio samples after offset 1e\+308 s"):
        load_audio(m4a, 8000, offset_s=1e308)
    assert abs(load_audio(m4a, 8000, offset_s=1.0, duration_s=1e308).shape[0] - 16000) < 800


def test_float_samples_of_absurd_magnitude_are_refused(write_audio):
    path = write_audio("junk.wav", np.full(16000, 1e30, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match=r"junk\.wav: decoded samples reach 1e\+30"):
        load_audio(path, 16000)
    # Channels of opposite sign must not cancel into silence.
    stereo = write_audio("cancel.wav", np.stack([np.full(16000, 1e30), np.full(16000, -1e30)], 1).astype(np.float32),
                         16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="decoded samples reach"):
        load_audio(stereo, 16000)
    loud = write_audio("loud.wav", (melody(16000, 1.0) * 8).astype(np.float32), 16000, subtype="FLOAT")
    assert np.abs(load_audio(loud, 16000)).max() > 1.0  # overshooting float audio is still audio


@needs_ffmpeg
def test_a_raw_aac_stream_gets_its_true_length_not_ffprobes_bitrate_guess(tmp_path):
    """ADTS .aac has no length in its header; ffprobe guesses from the first frames' bitrate
    (here 166 s for 120 s, the quiet start being cheap to code)."""
    path = tmp_path / "quiet_start.aac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anoisesrc=d=120:a=0.5", "-af",
                    "volume='if(lt(t,40),0.001,1)':eval=frame", "-c:a", "aac", "-b:a", "128k", str(path)], check=True)
    for source in (path, path.read_bytes()):
        assert probe_audio(source).duration_s == pytest.approx(120.0, abs=0.1)
    assert load_audio(path, 8000, offset_s=30.0, duration_s=10.0).shape[0] == 80000  # a window, not to the end
    with pytest.raises(AudioDecodeError, match="120.0. s long"):
        load_audio(path, 8000, offset_s=150.0)
