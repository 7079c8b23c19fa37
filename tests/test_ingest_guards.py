"""Guards of the ingest and embed stages: what must never wipe the tables, and what must not be
redone on every run. Real local Spark + Delta on generated audio bytes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import soundfile as sf

pytest.importorskip("pyspark")

from conftest import melody  # noqa: E402
from soundalike.config import load_config  # noqa: E402
from soundalike.errors import ConfigError  # noqa: E402
from soundalike.sample import generate_catalogue  # noqa: E402
from soundalike_pipelines.embed import run_embed  # noqa: E402
from soundalike_pipelines.ingest import run_ingest  # noqa: E402
from soundalike_pipelines.session import get_spark  # noqa: E402

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"
SR = 22050


def make_cfg(work: Path, catalogue: Path):
    return load_config(CONF, [f"workdir={work}", f"catalogue.path={catalogue}", "tables.schema=guards_test",
                              "spark.master=local[2]"])


def versions(spark, cfg) -> dict:
    return {t: spark.sql(f"DESCRIBE HISTORY {cfg.tables.name(t)}").agg({"version": "max"}).first()[0]
            for t in ("tracks", "clips", "embeddings", "ingest_errors")}


def errors(spark, cfg) -> dict:
    return {r.path: r for r in spark.table(cfg.tables.name("ingest_errors")).collect()}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """Three tracks and a 3 s file (too short for a clip), ingested and embedded once."""
    root = tmp_path_factory.mktemp("guards_cat")
    generate_catalogue(root, n_tracks=3, seed=11, min_duration_s=12.0, max_duration_s=16.0, progress=False)
    sf.write(root / "short.wav", melody(SR, 3.0, seed=2), SR)
    cfg = make_cfg(tmp_path_factory.mktemp("guards_work"), root)
    spark = get_spark(cfg)
    run_ingest(cfg, spark)
    first = run_embed(cfg, spark)
    assert first.tracks == 3 and first.errors == 1
    return cfg, root, spark


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_catalogue_path_is_a_config_error(path):
    # Path("") is the current directory: an unset variable must not scan wherever the job runs.
    with pytest.raises(ConfigError, match="catalogue.path is empty"):
        load_config(CONF, [f"catalogue.path={path}"])


def test_a_catalogue_that_looks_empty_never_wipes_the_tables(ingested, tmp_path):
    cfg, _, spark = ingested
    unmounted = tmp_path / "volume"
    unmounted.mkdir()
    before, tracks = versions(spark, cfg), spark.table(cfg.tables.name("tracks")).count()
    with pytest.raises(ConfigError, match=r"no audio files .* holds 4 file\(s\): refusing to remove them all"):
        run_ingest(make_cfg(Path(cfg.workdir), unmounted), spark)
    assert versions(spark, cfg) == before
    assert spark.table(cfg.tables.name("tracks")).count() == tracks == 4  # three songs and the short file


def test_a_file_that_fails_embed_is_retried_once_after_it_changes_not_on_every_run(ingested):
    cfg, root, spark = ingested
    short = root / "short.wav"
    later = time.time() + 60
    os.utime(short, (later, later))  # touched (or rewritten the same way): worth one more try
    assert run_ingest(cfg, spark).probed == 1
    retried = run_embed(cfg, spark)
    assert retried.tracks == 0 and retried.errors == 1
    assert errors(spark, cfg)[str(short.resolve())].error_class == "TooShort"
    before = versions(spark, cfg)
    again = run_embed(cfg, spark)
    assert again.tracks == 0 and again.errors == 0  # not decoded again: it has not changed since
    assert versions(spark, cfg) == before


def test_a_file_name_that_is_not_utf8_is_recorded_once_with_the_true_reason(ingested):
    cfg, root, spark = ingested
    raw = os.path.join(os.fsencode(root), b"caf\xe9 ol\xe9.wav")
    with open(raw, "wb") as handle:  # soundfile itself cannot name such a file
        sf.write(handle, melody(SR, 12.0, seed=5), SR, format="WAV")
    try:
        summary = run_ingest(cfg, spark)
        assert summary.errors == 1 and summary.upserted == 0
        shown = str(root.resolve() / "caf\\xe9 ol\\xe9.wav")
        row = errors(spark, cfg)[shown]
        assert row.stage == "ingest" and row.error_class == "InvalidFileName"
        assert "not valid UTF-8" in row.message and "does not exist" not in row.message
        before = versions(spark, cfg)
        for _ in range(2):  # the same error, not an insert / delete / insert cycle
            run_ingest(cfg, spark)
            assert versions(spark, cfg) == before
    finally:
        os.unlink(raw)
    run_ingest(cfg, spark)
    assert shown not in errors(spark, cfg)  # gone from the catalogue: its error goes too
    assert spark.table(cfg.tables.name("tracks")).count() == 4


def test_new_flag_thresholds_redo_the_stored_flags_and_retry_failed_files(ingested):
    cfg, root, spark = ingested
    clips = cfg.tables.name("clips")

    def silent():
        return spark.table(clips).where("is_silent").count()

    total, before = spark.table(clips).count(), silent()
    assert 0 <= before < total
    loud = load_config(CONF, [f"workdir={cfg.workdir}", f"catalogue.path={root}", "tables.schema=guards_test",
                              "spark.master=local[2]", "clips.silence_rms_db=0"])  # every clip is below 0 dBFS
    vectors = {(r.track_id, r.clip_idx): r.created_at for r in spark.table(cfg.tables.name("embeddings")).collect()}
    summary = run_embed(loud, spark)
    assert summary.tracks == 3 and summary.errors == 1  # the short file is tried again under new settings
    assert silent() == spark.table(clips).count() == total  # flags replaced, no clip added
    # The vectors do not depend on the thresholds: kept as they were.
    assert {(r.track_id, r.clip_idx): r.created_at
            for r in spark.table(cfg.tables.name("embeddings")).collect()} == vectors
    unchanged = versions(spark, cfg)
    assert run_embed(loud, spark).tracks == 0 and versions(spark, cfg) == unchanged
    assert run_embed(cfg, spark).tracks == 3 and silent() == before  # and back


def test_a_file_too_short_for_one_policy_gets_clips_under_a_shorter_min_tail(ingested):
    cfg, root, spark = ingested
    short_id = next(r.track_id for r in spark.table(cfg.tables.name("tracks")).collect() if r.path.endswith("short.wav"))
    shorter = load_config(CONF, [f"workdir={cfg.workdir}", f"catalogue.path={root}", "tables.schema=guards_test",
                                 "spark.master=local[2]", "clips.min_tail_s=2"])
    summary = run_embed(shorter, spark)
    assert summary.errors == 0 and summary.tracks == 4
    got = spark.table(cfg.tables.name("clips")).where(f"track_id = '{short_id}' and clip_policy = '10/10/2'").collect()
    assert [(c.start_s, c.end_s) for c in got] == [(0.0, 3.0)]


@pytest.mark.parametrize("damage", ["emptied", "overwritten with text"])
def test_a_stored_file_that_becomes_unreadable_keeps_its_rows_and_is_quarantined(ingested, damage):
    cfg, root, spark = ingested
    from soundalike_pipelines.runner import catalogue_status

    song = sorted(root.glob("track_*"))[0]
    path = str(song.resolve())
    track_id = next(r.track_id for r in spark.table(cfg.tables.name("tracks")).collect() if r.path == path)
    stored = {t: sorted((r.track_id, r.clip_idx) for r in spark.table(cfg.tables.name(t)).collect()
                        if r.track_id == track_id) for t in ("clips", "embeddings")}
    assert stored["clips"] and stored["embeddings"]
    good_before = catalogue_status(cfg, spark)["good"]
    original, stat = song.read_bytes(), song.stat()
    song.write_bytes(b"" if damage == "emptied" else b"not audio, a copy went wrong\n" * 200)
    try:
        summary = run_ingest(cfg, spark)
        assert summary.errors == 1 and summary.removed == 0 and summary.pruned_track_ids == 0
        assert any(r.path == path and r.track_id == track_id for r in spark.table(cfg.tables.name("tracks")).collect())
        for table, keys in stored.items():  # nothing stored is lost
            assert sorted((r.track_id, r.clip_idx) for r in spark.table(cfg.tables.name(table)).collect()
                          if r.track_id == track_id) == keys
        assert errors(spark, cfg)[path].stage == "ingest"
        status = catalogue_status(cfg, spark)
        assert status["good"] == good_before - 1
        assert any(p["path"] == path and p["kind"] == "quarantined" for p in status["problems"])
        assert run_embed(cfg, spark).tracks == 0  # its stored clips are still current
    finally:
        song.write_bytes(original)  # restored as it was: same bytes, size and time
        os.utime(song, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    summary = run_ingest(cfg, spark)
    assert summary.probed == 0 and summary.upserted == 0  # nothing to re-hash or re-embed
    assert path not in errors(spark, cfg)  # readable again: the error goes
    assert catalogue_status(cfg, spark)["good"] == good_before


def test_embed_errors_found_under_other_settings_go_when_the_files_are_done_under_these(ingested):
    cfg, root, spark = ingested
    from soundalike_pipelines.runner import catalogue_status

    songs = {str(p.resolve()) for p in root.glob("track_*")}
    # Under 20 s clips with a 17 s minimum every file here (12-16 s) is too short for a clip.
    long_clips = load_config(CONF, [f"workdir={cfg.workdir}", f"catalogue.path={root}", "tables.schema=guards_test",
                                    "spark.master=local[2]", "clips.clip_s=20", "clips.hop_s=20",
                                    "clips.min_tail_s=17"])
    assert run_embed(long_clips, spark).errors == 4
    assert songs <= set(errors(spark, cfg))
    summary = run_embed(cfg, spark)  # back to the policy the songs have clips under
    assert summary.tracks == 0
    assert not songs & set(errors(spark, cfg))  # their "too short" was about the other policy
    assert catalogue_status(cfg, spark)["good"] == 3
