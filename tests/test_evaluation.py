"""Degradations and the retrieval evaluation, on generated audio (no Spark)."""

import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import melody
from soundalike import degrade
from soundalike.config import load_config
from soundalike.embedders import create_embedder
from soundalike.errors import ParameterError
from soundalike.evaluation import EvalTrack, evaluate, plan_excerpts, plot_summary
from soundalike.extract import extract_track
from soundalike.index import build_index
from soundalike.sample import synthesize_track
from soundalike.search import Searcher


def band_energy(wave, sr, low, high):
    spec = np.abs(np.fft.rfft(wave)) ** 2
    f = np.fft.rfftfreq(wave.shape[0], 1 / sr)
    return spec[(f >= low) & (f < high)].sum() / spec.sum()


def test_phone_band_keeps_300_to_3400_hz_at_8_khz():
    wave = melody(44100, 4.0)
    out, sr = degrade.phone(wave, 44100)
    assert sr == 8000 and abs(out.shape[0] - 4 * 8000) <= 2
    assert band_energy(out, sr, 300, 3400) > 0.97


def test_mp3_64k_is_64_kbps_and_still_the_same_music():
    wave = melody(44100, 10.0, seed=2)
    data = degrade.encode(wave, 44100, "mp3", kbps=64)
    assert abs(len(data) * 8 / 10 / 1000 - 64) < 4
    out, sr = degrade.mp3(wave, 44100, kbps=64)
    assert sr == 44100 and abs(out.shape[0] - wave.shape[0]) < 0.1 * sr


def test_pink_noise_has_the_requested_snr_and_speed_changes_length():
    wave = melody(22050, 5.0, seed=3)
    noisy, _ = degrade.pink_noise(wave, 22050, snr_db=20.0, rng=np.random.default_rng(0))
    noise = noisy - wave
    assert 10 * np.log10(np.mean(wave**2) / np.mean(noise**2)) == pytest.approx(20.0, abs=0.1)
    fast, _ = degrade.speed(wave, 22050, factor=1.03)
    assert fast.shape[0] == pytest.approx(wave.shape[0] / 1.03, abs=2)
    loud, _ = degrade.gain(wave, 22050, db=-6.0)
    assert np.max(np.abs(loud)) == pytest.approx(np.max(np.abs(wave)) * 10 ** (-6 / 20), rel=1e-4)
    with pytest.raises(ParameterError):
        degrade.apply("underwater", wave, 22050, rng=np.random.default_rng(0))


def test_excerpt_offsets_avoid_the_clip_grid_and_cycle_degradations():
    tracks = [EvalTrack(f"t{i}", f"/x/{i}.wav", 60.0 + i) for i in range(4)]
    plan = plan_excerpts(tracks, 40, seed=1, hop_s=10.0)
    assert len(plan) == 40 and {q.degradation for q in plan} == set(degrade.DEGRADATIONS)
    for q in plan:
        phase = (q.offset_s / 10.0) % 1.0
        assert 0.1 <= phase <= 0.9 and 10.0 <= q.duration_s <= 30.0
        assert q.offset_s + q.duration_s <= 60.0 + 4
    assert plan == plan_excerpts(tracks, 40, seed=1, hop_s=10.0)


@pytest.fixture(scope="module")
def small_catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcat")
    cfg = load_config(None)
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    styles = ["piano_arpeggio", "drum_and_bass", "ambient_pad", "plucked_strings", "noisy_percussion", "bass_groove"]
    tracks, vecs, tids, cidx, starts = [], [], [], [], []
    for i, style in enumerate(styles * 2):
        path = root / f"{i:02d}_{style}.flac"
        sf.write(path, synthesize_track(style, duration_s=45.0, sample_rate_hz=22050, seed=50 + i), 22050)
        tid = f"track{i:02d}"
        clips = extract_track(path, embedder, cfg.clips)
        vecs.append(clips.vectors)
        tids += [tid] * len(clips)
        cidx += list(range(len(clips)))
        starts += list(clips.start_s)
        tracks.append(EvalTrack(tid, str(path), 45.0, style, None))
    index = build_index(np.concatenate(vecs), np.array(tids, dtype=object), np.array(cidx), np.array(starts),
                        embedder=embedder.key)
    meta = pd.DataFrame({"track_id": [t.track_id for t in tracks], "path": [t.path for t in tracks],
                         "title": [t.track_id for t in tracks], "tags": [[t.style] for t in tracks]})
    return Searcher(embedder, index, meta, cfg.clips, cfg.query), tracks


def test_evaluation_reports_every_degradation_and_is_reproducible(small_catalogue, tmp_path):
    searcher, tracks = small_catalogue
    first = evaluate(searcher.search, tracks, n_excerpts=16, seed=3, progress=False)
    by = first["excerpts"]["by_degradation"]
    assert set(by) == set(degrade.DEGRADATIONS) and sum(m["n"] for m in by.values()) == 16
    assert first["excerpts"]["by_degradation"]["none"]["top1"] == 1.0
    assert first["excerpts"]["overall"]["top10"] >= 0.75
    assert first["tags"]["n"] == 12 and 0.0 <= first["tags"]["precision_at_5"] <= 1.0
    assert first["versions"] is None  # no motif groups in this catalogue
    again = evaluate(searcher.search, tracks, n_excerpts=16, seed=3, progress=False)
    assert again["excerpts"] == first["excerpts"]
    png = plot_summary(first, tmp_path / "eval.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_excluding_the_query_track_still_fills_each_clips_neighbours(small_catalogue):
    searcher, tracks = small_catalogue
    source = open(tracks[0].path, "rb").read()
    # With k=2, a track's own clips take both slots of every query clip; excluding it must
    # leave the next-best tracks, not an empty answer.
    own = searcher.search(source, top_k_per_chunk=2)
    assert {r["track_id"] for r in own["results"]} == {tracks[0].track_id}
    others = searcher.search(source, top_k_per_chunk=2, exclude_track_ids=[tracks[0].track_id])
    assert others["results"] and tracks[0].track_id not in {r["track_id"] for r in others["results"]}
    assert sum(r["votes"] for r in others["results"]) == 2 * others["query_clips"]


def test_catalogue_of_short_tracks_skips_the_excerpt_queries_with_a_note_and_measures_the_rest(small_catalogue,
                                                                                                tmp_path):
    """Excerpts are 10-30 s: with every track under 11 s there is nothing to cut them from. That
    is a fact about the catalogue, not an error: the evaluate stage used to stop the pipeline."""
    import dataclasses

    searcher, tracks = small_catalogue
    short = [dataclasses.replace(t, duration_s=8.0) for t in tracks]
    with pytest.raises(ParameterError, match="no track is longer than 11 s"):
        plan_excerpts(short, 4, seed=0, hop_s=10.0)  # the planner itself still refuses
    summary = evaluate(searcher.search, short, n_excerpts=4, seed=0, progress=False)
    assert summary["excerpts"]["skipped"].startswith("no track is longer than 11 s (longest: 8.0 s, 12 tracks)")
    assert summary["excerpts"]["overall"] == {"n": 0, "top1": None, "top10": None, "mrr": None}
    assert summary["excerpts"]["by_degradation"] == {} and summary["queries"] == []
    assert summary["tags"]["n"] == 12  # the other measures still run
    png = plot_summary(summary, tmp_path / "eval.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
