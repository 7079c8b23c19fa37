"""Reliability of the catalogue pipeline: hostile files, killed stages, concurrent runs, failed
index builds. Every check runs the real Spark + Delta pipeline on real audio bytes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pyspark")
mlflow = pytest.importorskip("mlflow")

from conftest import melody  # noqa: E402
from soundalike.cli import main  # noqa: E402
from soundalike.clips import clip_starts  # noqa: E402
from soundalike.config import load_config  # noqa: E402
from soundalike.sample import applause, generate_catalogue  # noqa: E402
from soundalike_pipelines.lock import PipelineBusyError, pipeline_lock  # noqa: E402
from soundalike_pipelines.runner import run_pipeline  # noqa: E402
from soundalike_pipelines.session import get_spark  # noqa: E402

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"
SR = 22050


def _encoded(wave: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _write_long_flac(path: Path, seconds: int, sr: int = 8000) -> None:
    """A two-hour track written a minute at a time (never whole in memory)."""
    minute = melody(sr, 60.0, seed=9)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, format="FLAC") as f:
        for _ in range(seconds // 60):
            f.write(minute)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Good tracks mixed with every kind of bad entry; returns (cfg, overrides, good, bad, skipped)."""
    root = tmp_path_factory.mktemp("hostile_cat")
    work = tmp_path_factory.mktemp("hostile_work")
    generate_catalogue(root, n_tracks=3, seed=21, min_duration_s=20.0, max_duration_s=25.0, progress=False)
    good = {p.name for p in root.iterdir() if p.suffix != ".json"}
    song = melody(SR, 20.0, seed=4)

    (root / "spaces and ünïcödé — title.flac").write_bytes(_encoded(melody(SR, 15.0, seed=6), SR, "FLAC"))
    surround = np.stack([melody(96000, 12.0, seed=10 + c) for c in range(8)], axis=1)
    (root / "surround 8ch 96k.wav").write_bytes(_encoded(surround, 96000, "WAV", "PCM_16"))
    _write_long_flac(root / "two hours.flac", 7200)
    # A live set on the clip grid: music, 10 s of digital silence, music, 10 s of applause, music.
    live = np.concatenate([melody(SR, 10.0, seed=30), np.zeros(10 * SR, np.float32), melody(SR, 10.0, seed=31),
                           0.5 * applause(10.0, SR, seed=2), melody(SR, 10.0, seed=32)])
    (root / "live set.flac").write_bytes(_encoded(live, SR, "FLAC"))
    good |= {"spaces and ünïcödé — title.flac", "surround 8ch 96k.wav", "two hours.flac", "live set.flac"}

    bad = {}
    (root / "zero.wav").write_bytes(b"")
    bad["zero.wav"] = "empty"
    for fmt, subtype in (("MP3", "MPEG_LAYER_III"), ("FLAC", None), ("OGG", "VORBIS")):
        data = _encoded(song, SR, fmt, subtype)
        name = f"truncated.{fmt.lower()}"
        # Ogg keeps no total length: cut it inside its headers; the others half way through.
        (root / name).write_bytes(data[:400] if fmt == "OGG" else data[: len(data) // 2])
        bad[name] = "truncated|lost sync|no audio|not a readable"
    (root / "notes.mp3").write_text("these are my notes, not music\n" * 50)
    bad["notes.mp3"] = "not a readable audio file"
    (root / "noise.flac").write_bytes(np.random.default_rng(0).bytes(50_000))
    bad["noise.flac"] = "not a readable audio file"
    lying = bytearray(_encoded(song, SR, "WAV", "PCM_16"))
    at = lying.find(b"data")
    lying[at + 4 : at + 8] = (int.from_bytes(lying[at + 4 : at + 8], "little") * 10).to_bytes(4, "little")
    (root / "lying header.wav").write_bytes(bytes(lying))
    bad["lying header.wav"] = "WAV header declares"
    (root / "album.mp3").mkdir()
    bad["album.mp3"] = "directory"
    os.mkfifo(root / "pipe.wav")  # opening it would block forever
    bad["pipe.wav"] = "not a regular file"
    (root / "dangling.flac").symlink_to(root / "nowhere.flac")
    bad["dangling.flac"] = "does not exist"
    largest = max(p.stat().st_size for p in root.iterdir() if p.is_file())
    big = root / "huge.wav"  # one byte over the cap, which every other file is under
    sf.write(big, np.zeros((largest // 4 + 48000, 2), np.float32), 48000, subtype="PCM_16")
    bad["huge.wav"] = "max_file_bytes"
    locked = root / "locked.flac"
    locked.write_bytes(_encoded(melody(SR, 12.0, seed=12), SR, "FLAC"))
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: then it must simply be ingested
        good.add("locked.flac")
    else:
        bad["locked.flac"] = "permission denied"
    (root / "blip.wav").write_bytes(_encoded(melody(SR, 0.2, seed=1), SR, "WAV", "PCM_16"))
    skipped = {"blip.wav"}

    overrides = [f"workdir={work}", f"catalogue.path={root}", "tables.schema=hostile_test", "spark.master=local[2]",
                 "evaluation.n_excerpts=6", f"catalogue.max_file_bytes={big.stat().st_size - 1}"]
    return load_config(CONF, overrides), overrides, root, good, bad, skipped


@pytest.fixture(scope="module")
def hostile_run(hostile):
    """``soundalike pipeline --json`` over the hostile catalogue: (exit status, parsed output)."""
    import contextlib

    cfg, overrides, *_ = hostile
    args = ["pipeline", "--conf", str(CONF), "--json"] + [a for o in overrides for a in ("--set", o)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(args)
    return status, json.loads(printed.getvalue())


def test_hostile_catalogue_good_files_indexed_bad_ones_quarantined_with_reasons(hostile, hostile_run):
    cfg, overrides, root, good, bad, skipped = hostile
    rc, out = hostile_run
    assert rc == 0
    status = out["catalogue"]
    assert status["good"] == len(good), json.dumps(status, indent=1)
    assert status["quarantined"] == len(bad)
    assert status["skipped"] == len(skipped)

    spark = get_spark(cfg)
    rows = spark.table(cfg.tables.name("ingest_errors")).collect()
    errors = {Path(r["path"]).name: r for r in rows if r["stage"] != "fingerprint"}
    # Files the index / duplicates stages cannot decode for landmarks are ones quarantined already.
    assert {Path(r["path"]).name for r in rows if r["stage"] == "fingerprint"} <= set(bad)
    for name, reason in bad.items():
        assert name in errors, f"{name} is not in ingest_errors"
        assert errors[name]["stage"] in ("ingest", "embed") and errors[name]["message"]
        assert __import__("re").search(reason, errors[name]["message"]), (name, errors[name]["message"])
    assert errors["blip.wav"]["error_class"] == "TooShort"
    tracks = {Path(r["path"]).name: r for r in spark.table(cfg.tables.name("tracks")).collect()}
    clips = spark.table(cfg.tables.name("clips"))
    with_clips = {r["track_id"] for r in clips.select("track_id").distinct().collect()}
    for name in good:
        assert name in tracks and tracks[name]["track_id"] in with_clips, f"{name} was not embedded"
    live = sorted(clips.where(clips.track_id == tracks["live set.flac"]["track_id"]).collect(), key=lambda c: c.start_s)
    assert [(c.start_s, c.is_silent, c.is_noise) for c in live] == [
        (0.0, False, False), (10.0, True, False), (20.0, False, False), (30.0, False, True), (40.0, False, False)]
    index_run = mlflow.get_run(out["index"]["run_id"])
    assert int(index_run.data.params["vectors"]) == clips.count() - clips.where("is_silent or is_noise").count()
    long_clips = clips.where(clips.track_id == tracks["two hours.flac"]["track_id"]).count()
    assert long_clips == 720  # two hours in 10 s clips, decoded window by window
    assert out["index"]["vectors"] > 0 and out["register"]["version"] == "1"


def test_a_killed_embed_stage_completes_on_rerun_with_no_duplicate_or_missing_rows(tmp_path):
    root, work = tmp_path / "cat", tmp_path / "work"
    generate_catalogue(root, n_tracks=8, seed=31, min_duration_s=40.0, max_duration_s=60.0, progress=False)
    overrides = [f"workdir={work}", f"catalogue.path={root}", "tables.schema=killed_test", "spark.master=local[2]"]
    cfg = load_config(CONF, overrides)
    run_pipeline(cfg, ["ingest"])
    sets = [a for o in overrides for a in ("--set", o)]
    proc = subprocess.Popen([sys.executable, "-m", "soundalike", "embed", "--conf", str(CONF), *sets],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in proc.stdout:  # wait until the stage is under way, then kill it and its JVM
        if "[embed] running" in line:
            break
    time.sleep(8.0)
    assert proc.poll() is None, "the embed stage ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    summary = run_pipeline(cfg, ["embed", "index"])
    spark = get_spark(cfg)
    clips = spark.table(cfg.tables.name("clips"))
    emb = spark.table(cfg.tables.name("embeddings"))
    for table, keys in ((clips, ["track_id", "clip_policy", "clip_idx"]),
                        (emb, ["track_id", "clip_policy", "clip_idx", "embedder"])):
        assert table.count() == table.select(*keys).distinct().count()  # no duplicates
    assert clips.select("track_id").distinct().count() == 8  # nothing missing
    assert emb.count() == clips.count()
    expected = sum(len(clip_starts(r["duration_s"], clip_s=10.0, hop_s=10.0, min_tail_s=5.0))
                   for r in spark.table(cfg.tables.name("tracks")).collect())
    assert clips.count() == expected
    assert summary["index"]["vectors"] <= clips.count()


def test_a_second_run_on_the_same_work_dir_fails_clearly_while_the_first_holds_it(tmp_path):
    cfg = load_config(CONF, [f"workdir={tmp_path}", f"catalogue.path={tmp_path}", "tables.schema=lock_test"])
    with pipeline_lock(cfg):
        with pytest.raises(PipelineBusyError, match=r"another pipeline run is using work dir .*\"pid\": %d" % os.getpid()):
            run_pipeline(cfg, ["ingest"])
    with pipeline_lock(cfg):  # released: taken again at once
        pass


def test_a_duplicates_run_is_refused_while_a_pipeline_run_holds_the_work_dir(tmp_path, capsys):
    """`soundalike duplicates` (and jobs/duplicates.py, which calls it) writes the fingerprints
    table as the index stage does: it takes the same lock, before starting Spark."""
    overrides = [f"workdir={tmp_path / 'work'}", f"catalogue.path={tmp_path}", "tables.schema=lock_dups_test"]
    cfg = load_config(CONF, overrides)
    args = ["duplicates", "--conf", str(CONF), "--json"] + [a for o in overrides for a in ("--set", o)]
    with pipeline_lock(cfg):
        assert main(args) == 2
    out = capsys.readouterr()
    assert "soundalike duplicates: error: another pipeline run is using work dir" in out.err
    assert out.out == "" and not (tmp_path / "work" / "warehouse").exists()  # refused before any Spark work


def test_an_index_build_that_fails_half_way_is_never_registered(hostile, hostile_run, monkeypatch):
    """The index run is FAILED, not FINISHED, when its artifacts cannot all be logged; register
    keeps serving the previous index."""
    cfg, overrides, *_ = hostile
    from soundalike.mlflow_model import configure_mlflow
    from soundalike_pipelines.index_build import run_register

    configure_mlflow(cfg)
    before = mlflow.MlflowClient().get_model_version_by_alias(cfg.mlflow.model_name, "champion")
    changed = load_config(CONF, overrides + ["index.nprobe=16"])  # new settings: the index is rebuilt

    def broken_upload(*args, **kwargs):
        raise OSError("disk full while uploading the index")

    monkeypatch.setattr(mlflow, "log_artifacts", broken_upload)
    with pytest.raises(OSError, match="disk full"):
        run_pipeline(changed, ["index"])
    monkeypatch.undo()
    runs = mlflow.search_runs(experiment_names=[cfg.mlflow.experiment], output_format="list",
                              order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "FAILED"
    summary = run_register(changed, get_spark(changed))
    after = mlflow.MlflowClient().get_model_version_by_alias(cfg.mlflow.model_name, "champion")
    assert str(after.version) == str(before.version) == summary.version and summary.registered is False


def test_a_two_hour_file_is_decoded_in_bounded_memory(hostile):
    """extract_track reads a long file window by window: peak memory grows by far less than the
    decoded track (two hours at 22.05 kHz is 635 MB of float32) would take."""
    _, _, root, *_ = hostile
    script = (
        "import resource, sys\n"
        "from soundalike.config import ClipsConfig, EmbedderConfig\n"
        "from soundalike.embedders import create_embedder\n"
        "from soundalike.extract import extract_track\n"
        "import torch; torch.set_num_threads(1)\n"
        "emb = create_embedder(EmbedderConfig(name='mel', device='cpu'), clip_s=10.0)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = len(extract_track(sys.argv[1], emb, ClipsConfig()))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(n, (after - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(root / "two hours.flac")], capture_output=True,
                         text=True, check=True, timeout=600).stdout.split()
    clips, grown_mb = int(out[0]), int(out[1])
    assert clips == 720
    # Whole, it would take >1.5 GB: 230 MB decoded at 8 kHz, 635 MB resampled, 635 MB as clips.
    assert grown_mb < 500, f"peak memory grew {grown_mb} MB decoding a two-hour file"
