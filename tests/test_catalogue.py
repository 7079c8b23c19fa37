"""The catalogue's metadata sidecar: read as JSON or CSV, and a malformed one is a clear error."""

import json
from pathlib import Path

import pytest
import soundfile as sf

from conftest import melody
from soundalike.catalogue import read_sidecar, sidecar_tags
from soundalike.config import load_config
from soundalike.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"


@pytest.fixture
def catalogue(tmp_path):
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, melody(8000, 1.0, seed=len(name)), 8000)
    return tmp_path


def test_json_and_csv_sidecars_give_titles_and_tags_by_resolved_path(catalogue):
    (catalogue / "catalogue.json").write_text(json.dumps(
        [{"file": "a.wav", "title": "A", "tags": ["calm", "piano"], "style": "ambient"}, {"file": "b.wav"}]))
    meta = read_sidecar(catalogue, "catalogue.json")
    assert meta[str((catalogue / "a.wav").resolve())]["title"] == "A"
    assert sidecar_tags(meta[str((catalogue / "a.wav").resolve())]) == ["ambient", "calm", "piano"]
    (catalogue / "meta.csv").write_text('file,title,tags\na.wav,"Hello, World","calm; piano"\n')
    entry = read_sidecar(catalogue, "meta.csv")[str((catalogue / "a.wav").resolve())]
    assert entry["title"] == "Hello, World" and sidecar_tags(entry) == ["calm", "piano"]


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("catalogue.json", json.dumps([{"file": "a.wav"}, {"file": None}]), r"entry 2: 'file' must be a path .* None"),
        ("catalogue.json", json.dumps([{"file": ""}]), r"entry 1: 'file' must be a path"),
        ("catalogue.json", json.dumps([{"file": "a.wav", "tags": 5}]), r"entry 1 \(a.wav\): 'tags' must be a list"),
        ("catalogue.json", json.dumps([{"file": "a.wav", "tags": [{"x": 1}]}]), r"'tags' must be a list of strings"),
        ("meta.csv", "file,title,tags\na.wav,Hello, World,ambient\n", r"entry 1 has more fields than the header"),
    ],
)
def test_a_malformed_sidecar_is_a_config_error_naming_the_entry(catalogue, name, text, message):
    (catalogue / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_sidecar(catalogue, name)


def test_ingest_scan_reports_a_malformed_sidecar_as_a_config_error(catalogue):
    pytest.importorskip("pyspark")
    from soundalike_pipelines.ingest import scanned_rows

    (catalogue / "catalogue.json").write_text(json.dumps([{"file": "a.wav", "tags": 5}]))
    cfg = load_config(CONF, [f"catalogue.path={catalogue}"])
    with pytest.raises(ConfigError, match="'tags' must be a list"):
        scanned_rows(cfg)


def test_linked_directories_are_scanned_once_and_a_link_loop_ends(tmp_path):
    from soundalike.catalogue import scan_catalogue

    root, elsewhere = tmp_path / "cat", tmp_path / "elsewhere" / "album"
    (root / "real").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    sf.write(root / "real" / "x.flac", melody(22050, 2.0, seed=1), 22050)
    for i in range(2):
        sf.write(elsewhere / f"song_{i}.wav", melody(22050, 2.0, seed=2 + i), 22050)
    (root / "album").symlink_to(elsewhere, target_is_directory=True)
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)  # a link back up
    found = [f.path for f in scan_catalogue(root, extensions=("flac", "wav"))]
    assert sorted(found) == sorted([str((root / "real" / "x.flac").resolve())]
                                   + [str((elsewhere / f"song_{i}.wav").resolve()) for i in range(2)])
