import json
import os

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import melody
from soundalike.cli import main
from soundalike.compare import compare_files, compare_waves
from soundalike.errors import AudioDecodeError, ParameterError


@pytest.fixture
def song(write_audio):
    sr = 44100
    wave = melody(sr, 20.0, seed=11)
    return write_audio("song.wav", wave, sr), wave, sr


def test_identical_files_score_one(song):
    path, _, _ = song
    result = compare_files(path, path, seconds=15)
    assert result.mean_cosine == pytest.approx(1.0, abs=1e-5)
    assert result.frames == 15 * 44100 // 512 + 1
    assert np.all(result.timeline > 0.9999)


def test_late_start_scores_high_only_when_aligned(song, write_audio):
    path, wave, sr = song
    late = write_audio("late.wav", np.concatenate([np.zeros(2 * sr, np.float32), wave]), sr)
    plain = compare_files(path, late, seconds=15)
    aligned = compare_files(path, late, seconds=15, align=True)
    assert aligned.mean_cosine > 0.97
    assert plain.mean_cosine < aligned.mean_cosine - 0.15
    assert abs(aligned.offset_s - 2.0) <= 512 / sr  # within one hop
    # The other direction gives the negative offset.
    assert abs(compare_files(late, path, seconds=15, align=True).offset_s + 2.0) <= 512 / sr


def test_unrelated_music_scores_clearly_lower(song, write_audio):
    path, _, sr = song
    rng = np.random.default_rng(5)
    noise_track = np.convolve(rng.standard_normal(20 * sr), np.ones(8) / 8, mode="same").astype(np.float32) * 0.3
    other = write_audio("other.wav", melody(sr, 20.0, seed=99, note_s=0.6), sr)
    noisy = write_audio("noise.wav", noise_track, sr)
    same = compare_files(path, path).mean_cosine
    for unrelated in (other, noisy):
        score = compare_files(path, unrelated, align=True).mean_cosine
        assert score < same - 0.3, score


def test_stereo_48k_mp3_matches_its_mono_44k_wav(write_audio):
    sr = 44100
    wave = melody(sr, 16.0, seed=21)
    mono = write_audio("mono.wav", wave, sr)
    up = soxr.resample(wave, sr, 48000)
    stereo = np.stack([up, 0.9 * up], axis=1)
    mp3 = write_audio("stereo.mp3", stereo, 48000)
    assert sf.info(mp3).channels == 2 and sf.info(mp3).samplerate == 48000
    result = compare_files(mono, mp3, seconds=15)
    assert result.mean_cosine > 0.95, result.mean_cosine


def test_whole_track_comparison_with_seconds_zero(write_audio):
    sr = 22050
    wave = melody(sr, 40.0, seed=3)
    a = write_audio("a.flac", wave, sr)
    b = write_audio("b.flac", np.concatenate([np.zeros(sr * 3, np.float32), wave]), sr)
    result = compare_files(a, b, seconds=0, sr=sr, align=True)
    assert abs(result.offset_s - 3.0) <= 512 / sr
    assert result.frames >= 40 * sr // 512
    assert result.mean_cosine > 0.97


def test_compare_waves_respects_max_offset():
    sr = 22050
    wave = melody(sr, 12.0, seed=8)
    late = np.concatenate([np.zeros(3 * sr, np.float32), wave])[: wave.shape[0]]
    assert compare_waves(wave, late, sr, align=True, max_offset_s=1.0).offset_s <= 1.0


def test_cli_json_and_plot(song, write_audio, tmp_path, capsys):
    path, wave, sr = song
    late = write_audio("late.wav", np.concatenate([np.zeros(sr, np.float32), wave]), sr)
    png = tmp_path / "plots" / "cmp.png"
    assert main(["compare", str(path), str(late), "--align", "--json", "--plot", str(png)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) >= {"mean_cosine", "frames", "offset_s", "timeline"}
    assert len(payload["timeline"]) == payload["frames"]
    assert abs(payload["offset_s"] - 1.0) <= 512 / sr
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert (width, height) == (1300, 700)


def test_cli_reports_bad_input_as_one_line(tmp_path, capsys):
    bogus = tmp_path / "notes.mp3"
    bogus.write_text("not audio")
    assert main(["compare", str(bogus), str(bogus)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes.mp3" in err and err.startswith("soundalike compare: error:")


def test_a_short_track_is_compared_over_its_real_audio_not_padding(write_audio):
    """Two unrelated 6 s tracks score the same whatever --seconds says: no padding frames count."""
    sr = 22050
    a = write_audio("a6.wav", melody(sr, 6.0, seed=31), sr)
    b = write_audio("b6.wav", melody(sr, 6.0, seed=32, note_s=0.6), sr)
    own_length = compare_files(a, b, seconds=6, sr=sr)
    longer = compare_files(a, b, seconds=15, sr=sr)
    assert longer.frames == own_length.frames == 6 * sr // 512 + 1
    assert longer.mean_cosine == pytest.approx(own_length.mean_cosine, abs=1e-6)
    assert longer.mean_cosine < 0.6


def test_align_finds_an_excerpt_deep_inside_a_longer_track(write_audio):
    """The overlap rule counts the excerpt's real length, so a 10 s excerpt at 25 s of 40 s is found."""
    sr = 22050
    wave = melody(sr, 40.0, seed=12)
    full = write_audio("full.wav", wave, sr)
    excerpt = write_audio("excerpt.wav", wave[25 * sr : 35 * sr], sr)
    result = compare_files(full, excerpt, seconds=40, sr=sr, align=True)
    assert abs(result.offset_s + 25.0) <= 512 / sr
    assert result.mean_cosine > 0.97
    assert result.frames == pytest.approx(10 * sr / 512, abs=2)


@pytest.mark.parametrize("options, message", [
    (["--max-offset", "nan", "--align"], "max_offset_s must be a number >= 0"),
    (["--fmax", "nan", "--json"], "fmax_hz must be numbers"),
    (["--seconds", "nan"], "seconds must be a number >= 0"),
    (["--seconds", "inf"], "seconds must be a number >= 0"),
    (["--plot", "x.foo"], "name a .png file"),
    (["--plot", "/proc/nope/x.png"], "cannot write the plot to /proc/nope/x.png"),
])
def test_cli_bad_options_are_one_line_errors_with_exit_2(song, options, message, capsys):
    path, _, _ = song
    assert main(["compare", str(path), str(path), *options]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("soundalike compare: error:") and message in err, err


def test_cli_plot_without_suffix_reports_the_png_it_wrote(song, tmp_path, capsys, monkeypatch):
    path, _, _ = song
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(path), str(path), "--json", "--plot", "plotnoext", "--max-offset", "inf",
                 "--align"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["plot"] == "plotnoext.png" and (tmp_path / "plotnoext.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "plotnoext").exists() and payload["offset_s"] == 0.0


def test_compare_reads_files_whose_names_are_not_utf8(song, tmp_path, capsys):
    path, _, _ = song
    odd = tmp_path / os.fsdecode(b"caf\xe9 \xff.wav")  # Latin-1 bytes: not valid UTF-8
    odd.write_bytes(path.read_bytes())
    assert compare_files(path, odd, seconds=5).mean_cosine == pytest.approx(1.0, abs=1e-5)
    png = tmp_path / "odd.png"
    assert main(["compare", str(odd), str(path), "--seconds", "5", "--json", "--plot", str(png)]) == 0
    assert json.loads(capsys.readouterr().out)["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_float_file_of_absurd_samples_is_refused_not_scored_as_nan(song, write_audio, capsys):
    """1e30-valued float samples once gave ``"mean_cosine": NaN`` (not JSON) and exit 0."""
    junk = write_audio("junk.wav", np.full(44100 * 3, 1e30, np.float32), 44100, subtype="FLOAT")
    path = song[0]
    assert main(["compare", str(junk), str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert "NaN" not in out and "junk.wav" in err and "decoded samples reach 1e+30" in err
    # A float file that overshoots full scale a little is still audio.
    loud = write_audio("loud.wav", np.clip(np.asarray(melody(44100, 3.0)) * 4, -4, 4).astype(np.float32), 44100,
                       subtype="FLOAT")
    assert main(["compare", str(loud), str(loud), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_cosine"] == pytest.approx(1.0, abs=1e-4)


def test_compare_names_the_start_offset_it_refuses(write_audio):
    path = write_audio("a.wav", melody(22050, 2.0), 22050)
    with pytest.raises(ParameterError, match="start_a_s .* finite number of seconds >= 0, got inf"):
        compare_files(path, path, start_a_s=float("inf"))
    with pytest.raises(AudioDecodeError, match=r"a\.wav: no audio samples after offset 1e\+308 s"):
        compare_files(path, path, start_b_s=1e308)
