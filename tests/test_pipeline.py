"""The Spark pipeline against real local Delta tables, on a generated catalogue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pyspark = pytest.importorskip("pyspark")

from soundalike.clips import clip_starts  # noqa: E402
from soundalike.config import load_config  # noqa: E402
from soundalike.sample import generate_catalogue, load_metadata, synthesize_track  # noqa: E402
from soundalike_pipelines.runner import run_pipeline  # noqa: E402
from soundalike_pipelines.session import get_spark  # noqa: E402

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"


def make_cfg(workdir: Path, catalogue: Path, schema: str):
    return load_config(
        CONF,
        [f"workdir={workdir}", f"catalogue.path={catalogue}", f"tables.schema={schema}", "spark.master=local[2]"],
    )


def versions(spark, cfg) -> dict:
    return {
        t: spark.sql(f"DESCRIBE HISTORY {cfg.tables.name(t)}").agg({"version": "max"}).first()[0]
        for t in ("tracks", "clips", "embeddings", "ingest_errors")
    }


def rows(spark, cfg, table):
    return spark.table(cfg.tables.name(table)).collect()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalogue")
    generate_catalogue(root, n_tracks=6, seed=7, min_duration_s=12.0, max_duration_s=26.0, progress=False)
    (root / "shopping_list.mp3").write_text("eggs, milk, not audio\n" * 50)
    (root / "notes.txt").write_text("ignored: not an audio extension")
    return root


@pytest.fixture(scope="module")
def first_run(catalogue, tmp_path_factory):
    cfg = make_cfg(tmp_path_factory.mktemp("work"), catalogue, "pipe_main")
    spark = get_spark(cfg)
    summary = run_pipeline(cfg)
    return cfg, spark, summary


def test_pipeline_fills_every_table(first_run, catalogue):
    cfg, spark, summary = first_run
    meta = {str((catalogue / t.file).resolve()): t for t in load_metadata(catalogue)}
    tracks = {r.path: r for r in rows(spark, cfg, "tracks")}
    assert set(tracks) == set(meta)
    for path, track in tracks.items():
        assert len(track.track_id) == 64
        assert track.title == meta[path].title
        assert meta[path].style in track.tags
        assert abs(track.duration_s - meta[path].duration_s) < 0.1
        assert track.sample_rate == meta[path].sample_rate_hz
    clips = rows(spark, cfg, "clips")
    by_track: dict[str, list] = {}
    for c in clips:
        by_track.setdefault(c.track_id, []).append(c)
    for track in tracks.values():
        expected = clip_starts(track.duration_s, clip_s=10.0, hop_s=10.0, min_tail_s=5.0)
        got = sorted(c.start_s for c in by_track[track.track_id])
        np.testing.assert_allclose(got, expected, atol=1e-6)
    embeddings = rows(spark, cfg, "embeddings")
    assert len(embeddings) == len(clips)
    assert {e.embedder for e in embeddings} == {summary["embed"]["embedder"]}
    vectors = np.array([e.vector for e in embeddings], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    errors = rows(spark, cfg, "ingest_errors")
    assert [(e.stage, Path(e.path).name) for e in errors] == [("ingest", "shopping_list.mp3")]
    assert "not a readable audio file" in errors[0].message
    assert summary["ingest"]["errors"] == 1 and summary["embed"]["tracks"] == len(tracks)


def test_rerun_writes_no_new_delta_version(first_run):
    cfg, spark, _ = first_run
    before = versions(spark, cfg)
    summary = run_pipeline(cfg)
    assert versions(spark, cfg) == before
    assert summary["ingest"]["probed"] == 1  # only the still-bad file is looked at again
    assert summary["embed"]["tracks"] == 0


def test_silent_and_applause_clips_are_flagged_and_music_is_not(first_run, catalogue):
    cfg, spark, _ = first_run
    tracks = {r.track_id: r for r in rows(spark, cfg, "tracks")}
    meta = {str((catalogue / t.file).resolve()): t for t in load_metadata(catalogue)}
    flagged_expected = flagged_ok = music_clean = music_total = 0
    for c in rows(spark, cfg, "clips"):
        m = meta[tracks[c.track_id].path]
        spans = [*m.silent_spans_s, *m.applause_spans_s]
        covered = sum(max(0.0, min(c.end_s, b) - max(c.start_s, a)) for a, b in spans)
        if covered >= 0.9 * (c.end_s - c.start_s):
            flagged_expected += 1
            flagged_ok += bool(c.is_silent or c.is_noise)
        elif covered == 0:
            music_total += 1
            music_clean += not (c.is_silent or c.is_noise)
    assert music_total > 0 and music_clean == music_total
    assert flagged_ok == flagged_expected


def test_adding_three_and_removing_one_updates_exactly_those(catalogue, tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(catalogue, root)
    cfg = make_cfg(tmp_path / "work", root, "pipe_incr")
    spark = get_spark(cfg)
    run_pipeline(cfg)
    before_tracks = {r.path: r.track_id for r in rows(spark, cfg, "tracks")}
    before_emb = {(r.track_id, r.clip_idx): r.created_at for r in rows(spark, cfg, "embeddings")}

    removed = sorted(before_tracks)[0]
    Path(removed).unlink()
    added = []
    for i, style in enumerate(["piano_arpeggio", "drum_and_bass", "ambient_pad"]):
        path = root / f"new_{i}.flac"
        sf.write(path, synthesize_track(style, duration_s=14.0, sample_rate_hz=22050, seed=100 + i), 22050)
        added.append(str(path.resolve()))
    summary = run_pipeline(cfg)

    after_tracks = {r.path: r.track_id for r in rows(spark, cfg, "tracks")}
    assert set(after_tracks) == (set(before_tracks) - {removed}) | set(added)
    assert summary["ingest"]["upserted"] == 3 and summary["ingest"]["removed"] == 1
    assert summary["embed"]["tracks"] == 3
    after_emb = {(r.track_id, r.clip_idx): r.created_at for r in rows(spark, cfg, "embeddings")}
    gone_id = before_tracks[removed]
    assert not any(k[0] == gone_id for k in after_emb)
    assert not any(c.track_id == gone_id for c in rows(spark, cfg, "clips"))
    # Untouched tracks keep their rows as they were.
    for key, created in before_emb.items():
        if key[0] != gone_id:
            assert after_emb[key] == created
    assert {k[0] for k in after_emb} == set(after_tracks.values())


def test_rename_keeps_embeddings_and_changed_bytes_are_reembedded(catalogue, tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(catalogue, root)
    cfg = make_cfg(tmp_path / "work", root, "pipe_rename")
    spark = get_spark(cfg)
    run_pipeline(cfg)
    files = sorted(p for p in root.iterdir() if p.suffix in {".wav", ".flac"})
    renamed_from, changed = files[0], files[1]
    renamed_to = root / "moved" / ("renamed " + renamed_from.name)
    renamed_to.parent.mkdir()
    renamed_from.rename(renamed_to)
    old_id = next(r.track_id for r in rows(spark, cfg, "tracks") if r.path == str(changed.resolve()))
    wave, sr = sf.read(changed, dtype="float32")
    sf.write(changed, wave * 0.5, sr)  # new bytes, same path
    copy = root / ("copy_of_" + changed.name)
    shutil.copy(changed, copy)

    summary = run_pipeline(cfg)
    tracks = {r.path: r.track_id for r in rows(spark, cfg, "tracks")}
    assert str(renamed_to.resolve()) in tracks and str(renamed_from.resolve()) not in tracks
    new_id = tracks[str(changed.resolve())]
    assert new_id != old_id
    assert summary["embed"]["tracks"] == 1  # the changed file; the rename and the copy reuse ids
    emb_ids = {r.track_id for r in rows(spark, cfg, "embeddings")}
    assert new_id in emb_ids and old_id not in emb_ids
    assert tracks[str(renamed_to.resolve())] in emb_ids
    assert tracks[str(copy.resolve())] == new_id  # byte-identical copies share one id


def test_pipeline_on_short_tracks_skips_excerpt_queries_and_runs_every_stage(tmp_path):
    """Tracks of 5-8 s are a valid catalogue, but too short for 10-30 s excerpt queries: the
    evaluate stage used to raise there, so register and duplicates never ran."""
    root = tmp_path / "short"
    generate_catalogue(root, n_tracks=4, seed=3, min_duration_s=5.0, max_duration_s=8.0, progress=False)
    cfg = make_cfg(tmp_path / "work", root, "pipe_short")
    summary = run_pipeline(cfg)
    assert list(summary) == ["ingest", "embed", "index", "evaluate", "register", "duplicates", "catalogue"]
    evaluated = summary["evaluate"]
    assert evaluated["evaluated"] is True
    assert evaluated["note"].startswith("excerpt queries skipped: no track is longer than 11 s")
    assert not any(k in evaluated["metrics"] for k in ("eval_top1", "eval_mrr"))
    assert summary["register"]["registered"] is True and summary["duplicates"]["new_tracks"] == 4
    assert summary["catalogue"]["good"] == 4
    again = run_pipeline(cfg, ["evaluate"])["evaluate"]  # the note survives the cached answer
    assert again["evaluated"] is False and again["note"] == evaluated["note"]


def test_the_local_jvm_keeps_compiling_after_the_whole_pipeline(first_run):
    """conf/local.yaml stops the JIT at C1, whose code cache is 48 MB by default; ingest + embed
    of 400 tracks fill 40 MB of it, and a full cache disables the compiler for the session."""
    _, spark, _ = first_run
    jvm = spark.sparkContext._jvm
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    if bean.getVMOption("TieredStopAtLevel").getValue() == "1":
        assert int(bean.getVMOption("ReservedCodeCacheSize").getValue()) >= 128 << 20
    assert bean.getVMOption("UseCompiler").getValue() == "true"


def test_balanced_partitions_even_out_the_audio_per_task():
    from soundalike_pipelines.embed import balanced_partitions

    rng = np.random.default_rng(3)
    durations = list(rng.uniform(20, 400, size=400)) + [None, 0.0]  # unknown lengths count as the median
    parts = balanced_partitions(durations, 8)
    assert sorted(set(parts)) == list(range(8))
    loads = np.zeros(8)
    for d, p in zip(durations, parts):
        loads[p] += d or 0.0
    assert loads.max() / loads.mean() < 1.01  # hash partitioning of the same tracks: ~1.15
    with pytest.raises(ValueError):
        balanced_partitions([1.0], 0)


def test_hash_keys_send_each_bin_to_its_own_spark_partition(first_run):
    from pyspark.sql import functions as F

    from soundalike_pipelines.embed import _hash_keys

    _, spark, _ = first_run
    n = 7
    keys = _hash_keys(spark, n)
    df = spark.createDataFrame([(k, p) for p, k in enumerate(keys)] * 3, "part long, bin int")
    placed = df.repartition(n, "part").select("bin", F.spark_partition_id().alias("pid")).collect()
    assert {(r["bin"], r["pid"]) for r in placed} == {(p, p) for p in range(n)}


def test_embed_summary_reports_its_phases(first_run):
    _, _, summary = first_run
    phases = summary["embed"]["phase_seconds"]
    assert set(phases) == {"plan", "compute", "write"}
    assert all(v >= 0 for v in phases.values())
    assert sum(phases.values()) <= summary["embed"]["seconds"] + 0.05


def test_embed_batches_are_extract_tracks_rows_row_by_row(catalogue, tmp_path, monkeypatch):
    """The mapInArrow function alone (no Spark): Arrow rows equal extract_track's, per clip.

    Small output batches, so rows of several tracks are split across batches; a bad file and a
    too-short one become error rows between good tracks.
    """
    import pyarrow as pa

    from soundalike.config import config_to_dict
    from soundalike.embedders import create_embedder
    from soundalike.extract import extract_track
    from soundalike_pipelines import embed as embed_stage

    monkeypatch.setattr(embed_stage, "_ROWS_PER_BATCH", 3)
    cfg = make_cfg(tmp_path / "work", catalogue, "pipe_rows")
    good = sorted(str(p) for p in catalogue.glob("track_*"))[:3]
    short = tmp_path / "blip.wav"
    sf.write(short, synthesize_track("ambient_pad", duration_s=1.0, sample_rate_hz=22050, seed=1), 22050)
    paths = [good[0], str(catalogue / "shopping_list.mp3"), good[1], str(short), good[2]]
    ids = [f"id{i}" for i in range(len(paths))]
    batch = pa.RecordBatch.from_pydict({"track_id": ids, "path": paths})
    batches = list(embed_stage._embed_batches(config_to_dict(cfg))(iter([batch])))
    out = pa.Table.from_batches(batches)
    assert out.schema == embed_stage._OUT_ARROW
    assert len(batches) >= 4  # two error rows, and the good rows in at least two batches
    rows = out.to_pylist()
    errors = {r["track_id"]: r for r in rows if r["error_class"] is not None}
    assert set(errors) == {"id1", "id3"} and errors["id3"]["error_class"] == "TooShort"
    assert all(r["clip_idx"] == -1 and r["vector"] is None for r in errors.values())
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    for track_id, path in [("id0", good[0]), ("id2", good[1]), ("id4", good[2])]:
        mine = sorted((r for r in rows if r["track_id"] == track_id), key=lambda r: r["clip_idx"])
        core = extract_track(path, embedder, cfg.clips, batch_size=cfg.embedder.batch_size)
        assert [r["clip_idx"] for r in mine] == list(range(len(core))) and len(core) >= 1
        assert all(r["path"] == path for r in mine)
        np.testing.assert_allclose([r["vector"] for r in mine], core.vectors, atol=1e-5)
        np.testing.assert_allclose([r["start_s"] for r in mine], core.start_s)
        np.testing.assert_allclose([r["end_s"] for r in mine], core.end_s)
        np.testing.assert_allclose([r["rms_db"] for r in mine], core.rms_db, atol=1e-4)
        assert [r["is_silent"] for r in mine] == list(core.is_silent)
        assert [r["is_noise"] for r in mine] == list(core.is_noise)


def test_spark_submit_runs_a_job_given_the_delta_packages_and_says_so_without(catalogue, tmp_path):
    """`spark-submit jobs/<stage>.py` as the README writes it; without --packages the driver has
    no Delta classes (the config cannot add jars to a running JVM), and the job must say how to
    fix it rather than fail on the first table."""
    import json
    import os
    import re
    import subprocess
    import sys

    from soundalike_pipelines.session import delta_packages

    root = Path(__file__).resolve().parents[1]
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    job = [str(root / "jobs" / "ingest.py"), "--conf", str(CONF), "--set", f"workdir={tmp_path / 'work'}",
           "--set", f"catalogue.path={catalogue}", "--set", "spark.master=local[2]", "--json"]

    bare = subprocess.run([str(submit), *job], capture_output=True, text=True, env=env, timeout=300)
    assert bare.returncode == 2, bare.stdout[-3000:]  # the CLI's exit code for a SoundalikeError
    # spark-submit's PythonRunner merges the script's stderr into its stdout.
    assert "error: the Spark driver has no Delta Lake classes" in bare.stdout
    assert f"--packages {delta_packages()}" in bare.stdout
    assert not list((tmp_path / "work").rglob("*.parquet"))  # nothing written

    done = subprocess.run(
        [str(submit), "--packages", delta_packages(), "--driver-java-options", "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m", *job],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    summary = json.loads(done.stdout[re.search(r"^\{$", done.stdout, re.M).start():])  # --json: indented
    assert summary["ingest"]["upserted"] == 6 and summary["ingest"]["errors"] == 1  # the "mp3" of text


@pytest.mark.parametrize("stages", ["", ",", " , "])
def test_an_empty_stage_list_is_a_usage_error_and_runs_nothing(stages, tmp_path, capsys):
    """`--stages ""` parses to no stage at all; it once meant "every stage", register included."""
    from soundalike.cli import main

    work = tmp_path / "work"
    args = ["pipeline", "--conf", str(CONF), "--set", f"workdir={work}", "--set", f"catalogue.path={tmp_path}",
            "--stages", stages]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "soundalike pipeline: error: no stages given" in err and "ingest, embed" in err
    assert not work.exists()  # no lock taken, no Spark session, no table written


def test_json_keeps_the_summaries_of_the_stages_before_a_failing_one(catalogue, tmp_path, capsys):
    import json

    from soundalike.cli import main

    # The index stage needs the embed stage's vectors; a fresh schema has none, so it stops there.
    args = ["pipeline", "--conf", str(CONF), "--set", f"workdir={tmp_path / 'work'}", "--set",
            f"catalogue.path={catalogue}", "--set", "tables.schema=pipe_json_fail", "--set", "spark.master=local[2]",
            "--stages", "ingest,index", "--json"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["ingest"]["upserted"] == 6  # the stage that ran is reported
    assert answer["error"]["stage"] == "index" and answer["error"]["message"] in err


def test_an_empty_catalogue_says_so_instead_of_asking_for_the_embed_stage(tmp_path, capsys):
    from soundalike.cli import main

    empty = tmp_path / "cat"
    empty.mkdir()
    (empty / "broken.wav").write_bytes(b"")  # the only audio-named file cannot be read
    args = ["pipeline", "--conf", str(CONF), "--set", f"workdir={tmp_path / 'work'}", "--set",
            f"catalogue.path={empty}", "--set", "tables.schema=pipe_empty", "--set", "spark.master=local[2]",
            "--stages", "ingest,embed,index"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the tracks table is empty" in err and "1 file(s) in" in err and "run the embed stage" not in err


def test_missing_weights_stop_the_pipeline_before_ingest_writes_anything(catalogue, tmp_path, capsys):
    from soundalike.cli import main

    work = tmp_path / "work"
    args = ["pipeline", "--conf", str(CONF), "--set", f"workdir={work}", "--set", f"catalogue.path={catalogue}",
            "--set", "embedder.name=wav2vec2", "--set", f"embedder.weights_path={tmp_path / 'nowhere'}"]
    assert main(args) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (work / "warehouse").exists()  # no table was created, so none was written
    assert main([*args, "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] == {"stage": None, "message": err.split("error: ", 1)[1].strip()}


def test_a_stored_file_that_becomes_unreadable_stops_no_later_stage(tmp_path):
    """Its rows stay (ingest keeps what is stored), so evaluate and duplicates meet it: evaluate
    cuts no excerpt from it and duplicates drops the pairs it cannot check by ear."""
    root = tmp_path / "cat"
    generate_catalogue(root, n_tracks=4, seed=3, min_duration_s=14.0, max_duration_s=18.0, progress=False)
    cfg = load_config(CONF, [f"workdir={tmp_path / 'work'}", f"catalogue.path={root}", "tables.schema=pipe_unreadable",
                             "spark.master=local[2]", "evaluation.n_excerpts=12"])
    run_pipeline(cfg)
    damaged = sorted(root.glob("track_*"))[0]
    wave, sr = sf.read(damaged, dtype="float32")
    sf.write(root / "re_encoded.flac", 0.5 * wave, sr)  # a re-encode of it: checked against it by ear
    damaged.write_bytes(b"")
    summary = run_pipeline(cfg)
    assert summary["ingest"]["errors"] == 1 and summary["ingest"]["removed"] == 0
    assert summary["index"]["built"] and "evaluate" in summary and "duplicates" in summary
    assert str(damaged.resolve()) in {p["path"] for p in summary["catalogue"]["problems"]}
