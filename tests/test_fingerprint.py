"""Excerpt identification through degradations: landmark fingerprints fused into Searcher.search."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from soundalike import degrade
from soundalike.audio import load_audio
from soundalike.config import FingerprintConfig, load_config
from soundalike.embedders import create_embedder
from soundalike.errors import AudioDecodeError, ModelWeightsError, ParameterError
from soundalike.extract import extract_track
from soundalike.fingerprint import FingerprintIndex, build_fingerprint_index, fingerprint_source, fingerprint_wave
from soundalike.index import build_index
from soundalike.sample import synthesize_track
from soundalike.search import TRACKS_FILE, Searcher

from conftest import melody

SR = 44100


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Six 40 s tracks: four melodies (no repeats, so every offset is unique) and two of one style."""
    root = tmp_path_factory.mktemp("fpcat")
    import soundfile as sf

    paths = {}
    for i in range(4):
        path = root / f"melody_{i}.flac"
        sf.write(path, melody(SR, 40.0, seed=10 + i, note_s=0.2 + 0.03 * i), SR)
        paths[f"melody_{i}"] = path
    for i in range(2):  # two different songs in one style: they must not match each other
        path = root / f"piano_{i}.wav"
        sf.write(path, synthesize_track("piano_arpeggio", duration_s=40.0, sample_rate_hz=22050, seed=200 + i), 22050)
        paths[f"piano_{i}"] = path
    return paths


@pytest.fixture(scope="module")
def searcher(catalogue):
    cfg = load_config(None)
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    vectors, tids, cidx, starts = [], [], [], []
    for tid, path in catalogue.items():
        clips = extract_track(path, embedder, cfg.clips)
        vectors.append(clips.vectors)
        tids += [tid] * len(clips)
        cidx += list(range(len(clips)))
        starts += list(clips.start_s)
    index = build_index(np.concatenate(vectors), np.array(tids, object), np.array(cidx), np.array(starts),
                        embedder=embedder.key)
    fp = build_fingerprint_index(catalogue, cfg.fingerprint)
    tracks = pd.DataFrame({"track_id": list(catalogue), "path": [str(p) for p in catalogue.values()],
                           "title": list(catalogue), "tags": [[] for _ in catalogue]})
    return Searcher(embedder, index, tracks, cfg.clips, cfg.query, fingerprints=fp, fingerprint_cfg=cfg.fingerprint)


def excerpt(path, offset_s: float, seconds: float, degradation: str, seed: int = 0) -> bytes:
    wave = load_audio(path, SR, offset_s=offset_s, duration_s=seconds)
    wave, sr = degrade.apply(degradation, wave, SR, rng=np.random.default_rng(seed))
    return degrade.encode(wave, sr, "wav")


@pytest.mark.parametrize("degradation", list(degrade.DEGRADATIONS))
def test_degraded_excerpt_finds_its_source_first_with_its_offset(searcher, catalogue, degradation):
    for k, (name, offset, seconds) in enumerate([("melody_1", 7.3, 15.0), ("melody_3", 17.9, 12.0)]):
        out = searcher.search(excerpt(catalogue[name], offset, seconds, degradation, seed=k), max_results=5)
        top = out["results"][0]
        assert top["track_id"] == name, (degradation, [(r["track_id"], r["match"]) for r in out["results"]])
        assert top["match"]["confident"]
        assert top["match"]["offset_s"] == pytest.approx(offset, abs=0.25)
        assert out["identified"]["track_id"] == name
        # The existing fields stay, with the same meaning.
        assert {"combined_score", "votes", "total_similarity", "evidence", "path", "title"} <= set(top)


def test_phone_band_excerpt_of_a_same_style_song_is_not_its_neighbour(searcher, catalogue):
    out = searcher.search(excerpt(catalogue["piano_0"], 11.1, 20.0, "phone+mp3_64k"), max_results=6)
    assert out["results"][0]["track_id"] == "piano_0"
    other = [r for r in out["results"] if r["track_id"] == "piano_1"]
    assert not other or not (other[0]["match"] or {}).get("confident")


def test_speed_change_is_reported(searcher, catalogue):
    out = searcher.search(excerpt(catalogue["melody_2"], 5.0, 20.0, "speed_-3pct"))
    assert out["results"][0]["match"]["speed"] == pytest.approx(0.97)


def test_unrelated_audio_identifies_nothing(searcher):
    noise = melody(SR, 15.0, seed=999)
    out = searcher.search(degrade.encode(noise, SR, "wav"))
    assert out["identified"] is None
    assert not any((r["match"] or {}).get("confident") for r in out["results"])


def test_too_short_or_undecodable_excerpts_are_clear_errors(searcher, catalogue):
    with pytest.raises(AudioDecodeError, match="at least"):
        searcher.search(excerpt(catalogue["melody_0"], 3.0, 2.0, "none"))
    with pytest.raises(AudioDecodeError, match="cannot decode"):
        searcher.search(b"RIFF, but not audio at all" * 10)
    wave = load_audio(catalogue["melody_0"], 8000, duration_s=2.0)
    with pytest.raises(ParameterError, match="fingerprint.min_query_s"):
        searcher.fingerprints.match_wave(wave, 8000)


def test_index_dir_round_trip_verifies_the_fingerprint_files(searcher, catalogue, tmp_path):
    cfg = load_config(None)
    directory = tmp_path / "index"
    searcher.index.save(directory)
    searcher.tracks.reset_index(drop=True).to_parquet(directory / TRACKS_FILE, index=False)
    names = searcher.fingerprints.save(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(names) <= set(manifest["sha256"]) and manifest["fingerprint"]["entries"] == len(searcher.fingerprints)
    assert all(not n.endswith(".pkl") for n in names)
    loaded = Searcher.load(directory, cfg)
    out = loaded.search(excerpt(catalogue["melody_2"], 9.0, 12.0, "phone"))
    assert out["results"][0]["track_id"] == "melody_2" and out["results"][0]["match"]["confident"]
    off = Searcher.load(directory, dataclasses.replace(cfg, fingerprint=FingerprintConfig(enabled=False)))
    assert off.fingerprints is None and "identified" not in off.search(excerpt(catalogue["melody_2"], 9.0, 12.0, "none"))
    hashes = np.load(directory / "fp_hashes.npy")
    np.save(directory / "fp_hashes.npy", hashes[::-1].copy())
    with pytest.raises(ModelWeightsError, match="checksum"):
        Searcher.load(directory, cfg)


def test_fingerprint_settings_are_validated():
    from soundalike.errors import ConfigError

    with pytest.raises(ConfigError, match="band"):
        FingerprintConfig(fmax_hz=5000.0)
    with pytest.raises(ConfigError, match="speed_factors"):
        load_config(None, ["fingerprint.speed_factors=[]"])
    assert FingerprintIndex.load("/nonexistent") is None


def test_a_recording_held_twice_is_confident_for_both_copies(catalogue):
    cfg = FingerprintConfig()
    wave = load_audio(catalogue["melody_1"], 8000)
    copy = degrade.mp3(load_audio(catalogue["melody_1"], SR), SR, kbps=96)
    fps = {name: fingerprint_source(path, cfg) for name, path in catalogue.items()}
    fps["melody_1_mp3"] = fingerprint_wave(copy[0], copy[1], cfg)
    index = FingerprintIndex.from_fingerprints(fps, cfg)
    matches = index.match_wave(wave[8000 * 5: 8000 * 20], 8000)
    confident = {m.track_id for m in matches if m.confident}
    assert confident == {"melody_1", "melody_1_mp3"}


def test_held_chords_of_other_songs_are_not_identified():
    """Sustained, stationary textures (pads, drones) repeat the same landmark pairs at every
    moment, so thousands of chance matches pile up on some offset of another such song; a source
    is a peak that stands out of its own matches, not just 30 aligned hits."""
    sr = 22050
    cfg = FingerprintConfig()
    pads = {f"pad_{i}": synthesize_track("ambient_pad", duration_s=60.0, sample_rate_hz=sr, seed=i)
            for i in (7, 17, 18, 19)}
    index = FingerprintIndex.from_fingerprints({k: fingerprint_wave(w, sr, cfg) for k, w in pads.items()}, cfg)
    for name, wave in pads.items():
        others = index.match_wave(wave, sr, exclude_track_ids=[name])  # a pad the catalogue lacks
        assert not any(m.confident for m in others), (name, others[:2])
        own = index.match_wave(degrade.phone(wave[sr * 20: sr * 35], sr)[0], 8000)  # one it has
        assert own[0].track_id == name and own[0].confident
        assert own[0].aligned_hits >= cfg.min_peak_share * own[0].matched_hashes
