"""The synthetic sample catalogue: real files on disk, decoded back and measured."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.ndimage import median_filter, uniform_filter1d
from scipy.signal import stft, welch

from soundalike.sample import (
    METADATA_FILENAME,
    STYLES,
    SampleTrack,
    generate_catalogue,
    load_metadata,
    synthesize_track,
)

SHORT = dict(min_duration_s=6.0, max_duration_s=10.0, progress=False)
N_TRACKS = 12
SEED = 3


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> tuple[Path, list[SampleTrack]]:
    root = tmp_path_factory.mktemp("sample_catalogue")
    tracks = generate_catalogue(root, n_tracks=N_TRACKS, seed=SEED, **SHORT)
    return root, tracks


def read(root: Path, track: SampleTrack) -> np.ndarray:
    wave, sr = sf.read(root / track.file, dtype="float32")
    assert sr == track.sample_rate_hz
    return wave


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def span(wave: np.ndarray, sr: int, start_s: float, end_s: float, *, margin_s: float = 0.0) -> np.ndarray:
    return wave[int(round((start_s + margin_s) * sr)) : int(round((end_s - margin_s) * sr))]


def outside(wave: np.ndarray, sr: int, spans, *, margin_s: float) -> np.ndarray:
    keep = np.ones(wave.shape[0], dtype=bool)
    for a, b in spans:
        keep[max(0, int((a - margin_s) * sr)) : int((b + margin_s) * sr)] = False
    return wave[keep]


def band_flatness(x: np.ndarray, sr: int, band_hz=(500.0, 8000.0)) -> float:
    """Median over ~93 ms frames of the spectral flatness inside ``band_hz``."""
    frame = int(round(2048 * sr / 22050))
    f, _, z = stft(x, fs=sr, nperseg=frame, noverlap=frame // 2)
    power = np.abs(z[(f >= band_hz[0]) & (f <= band_hz[1])]) ** 2 + 1e-12
    loud = power.sum(0) > 1e-6 * power.sum(0).max()
    flat = np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)
    return float(np.median(flat[loud]))


def tonality(x: np.ndarray, sr: int) -> float:
    """Fraction of frames with a spectral peak 15 dB above its +-60 Hz neighbourhood (100 Hz-5 kHz)."""
    frame = int(round(2048 * sr / 22050))  # ~93 ms, ~11 Hz bins at every rate
    f, _, z = stft(x, fs=sr, nperseg=frame, noverlap=frame // 2)
    power = uniform_filter1d(np.abs(z) ** 2, size=3, axis=1)  # three frames, as a listener would
    db = 10 * np.log10(power + 1e-12)
    width = 2 * int(60.0 / (f[1] - f[0])) + 1
    prominence = db - median_filter(db, size=(width, 1), mode="nearest")
    band = (f >= 100) & (f <= 5000)
    loud = db.max(0) > db.max() - 50
    return float(np.mean(prominence[band][:, loud].max(0) > 15.0))


# --------------------------------------------------------------------------- files and metadata


def test_metadata_round_trips_and_names_exactly_the_files_written(catalogue):
    root, tracks = catalogue
    assert load_metadata(root) == tracks
    assert sorted(p.name for p in root.iterdir()) == sorted([METADATA_FILENAME, *(t.file for t in tracks)])
    rows = json.loads((root / METADATA_FILENAME).read_text())
    assert isinstance(rows, list) and len(rows) == N_TRACKS
    assert rows[0]["file"] == tracks[0].file and isinstance(rows[0]["tags"], list)
    assert len({t.title for t in tracks}) == N_TRACKS
    for t in tracks:
        assert t.style in STYLES and t.style in t.file and t.file.endswith("." + t.format)
        assert t.style in t.tags and ({"slow", "medium", "fast"} & set(t.tags))
        assert t.key.split()[1] in ("major", "minor") and t.instruments
        assert 6.0 <= t.duration_s <= 10.0 and round(t.duration_s, 1) == t.duration_s


def test_every_file_decodes_at_its_declared_rate_and_duration_without_clipping(catalogue):
    root, tracks = catalogue
    for t in tracks:
        info = sf.info(root / t.file)
        assert info.samplerate == t.sample_rate_hz and info.channels == 1
        assert info.format == {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}[t.format]
        wave = read(root, t)
        assert abs(wave.shape[0] / t.sample_rate_hz - t.duration_s) <= 0.05, t.file
        peak = float(np.max(np.abs(wave)))
        assert 10 ** (-3 / 20) <= peak < 1.0, (t.file, peak)  # about -1 dBFS, never clipped
        if t.format in ("wav", "flac"):
            assert peak == pytest.approx(10 ** (-1 / 20), abs=2e-3)


def test_formats_cycle_and_mp3_uses_only_mpeg_sample_rates(catalogue):
    _, tracks = catalogue
    assert [t.format for t in tracks] == ["wav", "flac", "ogg", "mp3"] * (N_TRACKS // 4)
    assert {t.sample_rate_hz for t in tracks} <= {22050, 32000, 44100, 48000}
    assert all(t.sample_rate_hz in (32000, 44100, 48000) for t in tracks if t.format == "mp3")
    assert len({t.style for t in tracks}) >= 5


def test_same_seed_rebuilds_the_same_catalogue_byte_for_byte(catalogue, tmp_path):
    root, tracks = catalogue
    again = generate_catalogue(tmp_path, n_tracks=N_TRACKS, seed=SEED, **SHORT)
    assert again == tracks
    for t in tracks:
        assert (tmp_path / t.file).read_bytes() == (root / t.file).read_bytes(), t.file
        assert np.array_equal(read(tmp_path, t), read(root, t))
    # Regenerating into the same directory is allowed and changes nothing.
    assert generate_catalogue(tmp_path, n_tracks=N_TRACKS, seed=SEED, **SHORT) == tracks
    assert (tmp_path / tracks[1].file).read_bytes() == (root / tracks[1].file).read_bytes()


def test_another_seed_gives_another_catalogue(catalogue, tmp_path):
    root, tracks = catalogue
    other = generate_catalogue(tmp_path, n_tracks=4, seed=SEED + 1, **SHORT)
    assert [t.seed for t in other] != [t.seed for t in tracks[:4]]
    a, b = read(root, tracks[0]), read(tmp_path, other[0])
    n = min(a.shape[0], b.shape[0])
    assert a.shape != b.shape or not np.array_equal(a[:n], b[:n])


def test_a_directory_holding_another_catalogue_is_refused(tmp_path):
    generate_catalogue(tmp_path, n_tracks=2, seed=1, **SHORT)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="different sample catalogue"):
        generate_catalogue(tmp_path, n_tracks=3, seed=1, **SHORT)
    with pytest.raises(ValueError, match="different sample catalogue"):
        generate_catalogue(tmp_path, n_tracks=2, seed=2, **SHORT)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_out_dir_is_created_and_progress_bar_can_be_silenced(tmp_path, capsys):
    target = tmp_path / "a" / "b"
    generate_catalogue(target, n_tracks=1, seed=0, min_duration_s=5.0, max_duration_s=5.0, progress=False)
    assert (target / METADATA_FILENAME).is_file()
    assert capsys.readouterr().err == ""
    generate_catalogue(tmp_path / "c", n_tracks=1, seed=0, min_duration_s=5.0, max_duration_s=5.0, progress=True)
    assert "1/1" in capsys.readouterr().err


# --------------------------------------------------------------------------- silence and applause


def test_declared_silent_spans_are_silent_and_the_music_around_them_is_not(catalogue):
    root, tracks = catalogue
    silent = [t for t in tracks if t.silent_spans_s]
    assert len(silent) >= 2
    for t in silent:
        wave, sr = read(root, t), t.sample_rate_hz
        for a, b in t.silent_spans_s:
            assert 0.0 <= a < b <= t.duration_s and b - a >= 1.5
            # Lossy codecs smear a few milliseconds across the edges.
            assert rms_db(span(wave, sr, a, b, margin_s=0.05)) < -60.0, t.file
        music = outside(wave, sr, [*t.silent_spans_s, *t.applause_spans_s], margin_s=0.1)
        assert rms_db(music) > -35.0, t.file
    for t in tracks:
        if not t.silent_spans_s:
            assert rms_db(read(root, t)[: t.sample_rate_hz]) > -45.0, t.file  # music from the start


def test_applause_spans_are_flat_untonal_noise_unlike_the_music(catalogue):
    root, tracks = catalogue
    live = [t for t in tracks if t.applause_spans_s]
    assert len(live) >= 2
    for t in live:
        assert "live" in t.tags
        wave, sr = read(root, t), t.sample_rate_hz
        (a, b), = t.applause_spans_s
        assert 0.0 < a < b < t.duration_s and b - a >= 1.5
        assert not any(min(b, d) > max(a, c) for c, d in t.silent_spans_s)
        claps = span(wave, sr, a, b, margin_s=0.4)
        music = outside(wave, sr, [*t.silent_spans_s, *t.applause_spans_s], margin_s=0.1)
        assert rms_db(claps) > rms_db(music) - 12.0, t.file  # clearly audible
        # Applause is flat and untonal; music, even drum-heavy music, keeps tonal peaks.
        assert band_flatness(claps, sr) > max(0.3, band_flatness(music, sr)), t.file
        assert tonality(claps, sr) < 0.1, t.file
        assert tonality(music, sr) > 0.3, t.file


# --------------------------------------------------------------------------- motifs and styles


def test_motif_groups_hold_two_or_three_takes_in_other_styles_or_tempos(catalogue):
    _, tracks = catalogue
    groups: dict[str, list[SampleTrack]] = {}
    for t in tracks:
        if t.motif_id is not None:
            groups.setdefault(t.motif_id, []).append(t)
    assert groups and all(2 <= len(g) <= 3 for g in groups.values())
    assert 0.2 <= sum(len(g) for g in groups.values()) / len(tracks) <= 0.5
    other_style = 0
    for takes in groups.values():
        first = takes[0]
        assert len({t.key for t in takes}) == 1  # one melody, one key
        for t in takes[1:]:
            assert 0.045 <= abs(t.tempo_bpm / first.tempo_bpm - 1.0) <= 0.255, (first, t)
            other_style += t.style != first.style
        assert all("take" in t.title and "melodic" in t.tags for t in takes)
    assert other_style >= 1


def test_a_motif_is_played_as_a_lead_line_at_its_scale_degrees():
    # A minor: degrees 0, 2, 4 are A, C, E; the lead plays them an octave above the chords.
    motif = np.array([[0, 1.0], [2, 1.0], [4, 1.0], [np.nan, 1.0]])
    sr = 22050
    kwargs = dict(duration_s=12.0, sample_rate_hz=sr, seed=5, tempo_bpm=120.0, key="A minor")
    plain = synthesize_track("noisy_percussion", **kwargs)
    lead = synthesize_track("noisy_percussion", motif=motif, **kwargs)
    assert synthesize_track("noisy_percussion", motif=motif, **kwargs).tobytes() == lead.tobytes()
    f, p_plain = welch(plain, fs=sr, nperseg=8192)
    _, p_lead = welch(lead, fs=sr, nperseg=8192)

    def gain_db(hz: float) -> float:
        near = (f > hz * 0.985) & (f < hz * 1.015)
        return float(10 * np.log10(p_lead[near].max() / p_plain[near].max()))

    for hz in (440.0, 523.25, 659.26):  # A4, C5, E5
        assert gain_db(hz) > 12.0, hz
    for hz in (466.16, 587.33, 698.46):  # Bb4, D5, F5: not in the motif
        assert gain_db(hz) < 6.0, hz


def log_band_profile(wave: np.ndarray, sr: int) -> np.ndarray:
    """Mean and std over time of 24 log-spaced band levels (dB, gain-normalised) plus onset rate."""
    f, _, z = stft(wave, fs=sr, nperseg=2048, noverlap=1024)
    power = np.abs(z) ** 2
    edges = np.geomspace(60.0, 9000.0, 25)
    bands = np.stack([power[(f >= lo) & (f < hi)].sum(0) for lo, hi in zip(edges[:-1], edges[1:])])
    db = 10 * np.log10(bands + 1e-8 * bands.max())  # an 80 dB floor, like a log-mel top_db
    db -= db.mean()
    flux = np.maximum(np.diff(db, axis=1), 0).sum(0)
    return np.concatenate([db.mean(1) / 10, db.std(1) / 5, [flux.mean() / 20, flux.std() / 20]])


def test_each_style_sits_closer_to_itself_than_to_any_other_style():
    # Three renders per style (other seeds: other tempo, key, progression, arrangement).
    sr = 22050
    profiles, labels = [], []
    for style in STYLES:
        for seed in (10, 11, 12):
            wave = synthesize_track(style, duration_s=10.0, sample_rate_hz=sr, seed=seed)
            profiles.append(log_band_profile(wave, sr))
            labels.append(style)
    x = np.stack(profiles)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    styles = np.array(labels)
    for style in STYLES:
        own = styles == style
        within = dist[np.ix_(own, own)][~np.eye(own.sum(), dtype=bool)].mean()
        for other in set(STYLES) - {style}:
            assert dist[np.ix_(own, styles == other)].mean() > 1.1 * within, (style, other)


def spectral_centroid_hz(wave: np.ndarray, sr: int) -> float:
    f, p = welch(wave, fs=sr, nperseg=2048)
    return float((f * p).sum() / p.sum())


def test_noisy_percussion_is_brighter_and_busier_than_ambient_pads():
    sr = 22050
    perc = synthesize_track("noisy_percussion", duration_s=10.0, sample_rate_hz=sr, seed=4)
    pads = synthesize_track("ambient_pad", duration_s=10.0, sample_rate_hz=sr, seed=4)
    assert spectral_centroid_hz(perc, sr) > 3 * spectral_centroid_hz(pads, sr)
    assert band_flatness(perc, sr) > 5 * band_flatness(pads, sr)
    onset_rate = lambda w: log_band_profile(w, sr)[-2]  # noqa: E731 - mean spectral flux
    assert onset_rate(perc) > 2 * onset_rate(pads)


def test_drum_and_bass_is_fast_and_bass_heavy_where_piano_is_not():
    sr = 22050
    dnb = synthesize_track("drum_and_bass", duration_s=10.0, sample_rate_hz=sr, seed=6)
    piano = synthesize_track("piano_arpeggio", duration_s=10.0, sample_rate_hz=sr, seed=6)

    def low_share(w):
        f, p = welch(w, fs=sr, nperseg=4096)
        return p[f < 120].sum() / p.sum()

    assert low_share(dnb) > 3 * low_share(piano)


# --------------------------------------------------------------------------- synthesize_track


@pytest.mark.parametrize("style", STYLES)
def test_synthesize_track_is_deterministic_mono_float32_at_minus_one_dbfs(style):
    kwargs = dict(duration_s=5.0, sample_rate_hz=32000, seed=11)
    wave = synthesize_track(style, **kwargs)
    assert wave.dtype == np.float32 and wave.shape == (160000,)
    assert np.max(np.abs(wave)) == pytest.approx(10 ** (-1 / 20), rel=1e-4)
    assert rms_db(wave) > -35.0
    assert np.array_equal(wave, synthesize_track(style, **kwargs))
    assert not np.array_equal(wave, synthesize_track(style, duration_s=5.0, sample_rate_hz=32000, seed=12))


def test_a_long_track_synthesises_quickly():
    started = time.perf_counter()
    synthesize_track("ambient_pad", duration_s=120.0, sample_rate_hz=44100, seed=0)  # the slowest style
    assert time.perf_counter() - started < 3.0


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_tracks=0), "n_tracks"),
        (dict(min_duration_s=20.0, max_duration_s=10.0), "must not exceed"),
        (dict(min_duration_s=4.0, max_duration_s=10.0), "min_duration_s"),
        (dict(min_duration_s=float("nan")), "min_duration_s"),
        (dict(seed=-1), "seed"),
    ],
)
def test_generate_catalogue_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_catalogue(tmp_path / "cat", **{"progress": False, **kwargs})
    assert not (tmp_path / "cat").exists()


@pytest.mark.parametrize(
    "style, kwargs, message",
    [
        ("polka", {}, "unknown style"),
        ("piano_arpeggio", dict(key="H minor"), "unknown key"),
        ("piano_arpeggio", dict(duration_s=0.0), "duration_s"),
        ("piano_arpeggio", dict(sample_rate_hz=1000), "sample_rate_hz"),
        ("piano_arpeggio", dict(tempo_bpm=0.0), "tempo_bpm"),
        ("piano_arpeggio", dict(motif=np.zeros(3)), "motif"),
        ("piano_arpeggio", dict(motif=np.array([[0.0, -1.0]])), "motif"),
    ],
)
def test_synthesize_track_rejects_bad_arguments(style, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize_track(style, **{"duration_s": 2.0, "sample_rate_hz": 22050, "seed": 0, **kwargs})


def test_load_metadata_explains_a_missing_or_foreign_sidecar(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_metadata(tmp_path)
    (tmp_path / METADATA_FILENAME).write_text(json.dumps([{"file": "a.wav"}]))
    with pytest.raises(ValueError, match="not a sample-catalogue sidecar"):
        load_metadata(tmp_path)
