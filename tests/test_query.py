"""Index, registered pyfunc, `soundalike query` and the real `mlflow models serve` endpoint."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pyspark")
mlflow = pytest.importorskip("mlflow")

from soundalike.audio import load_audio  # noqa: E402
from soundalike.cli import main  # noqa: E402
from soundalike.config import load_config  # noqa: E402
from soundalike.mlflow_model import configure_mlflow  # noqa: E402
from soundalike.sample import generate_catalogue, load_metadata  # noqa: E402
from soundalike_pipelines.runner import run_pipeline  # noqa: E402
from soundalike_pipelines.session import get_spark  # noqa: E402

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("qcat")
    work = tmp_path_factory.mktemp("qwork")
    generate_catalogue(root, n_tracks=12, seed=3, min_duration_s=30.0, max_duration_s=50.0, progress=False)
    overrides = [f"workdir={work}", f"catalogue.path={root}", "tables.schema=query_test", "spark.master=local[2]",
                 "evaluation.n_excerpts=24"]
    cfg = load_config(CONF, overrides)
    summary = run_pipeline(cfg)
    configure_mlflow(cfg)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.model_name}@champion")
    return cfg, overrides, root, load_metadata(root), model, summary


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ask(model, data: bytes, **params):
    import pandas as pd

    return model.predict(pd.DataFrame({"audio_b64": [b64(data)]}), params=params)[0]["results"]


def test_index_run_is_logged_with_params_metrics_and_artifacts(indexed):
    cfg, _, _, meta, _, summary = indexed
    run = mlflow.get_run(summary["index"]["run_id"])
    assert run.data.params["index_factory"] == "Flat"
    assert int(run.data.params["vectors"]) == summary["index"]["vectors"] > 0
    assert "build_seconds" in run.data.metrics
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "index")}
    assert {"index/clips.faiss", "index/ids.parquet", "index/manifest.json", "index/config.json"} <= names
    assert summary["register"]["version"] == "1"


def test_evaluation_is_logged_to_the_index_run(indexed):
    *_, summary = indexed
    assert summary["evaluate"]["evaluated"] is True
    run = mlflow.get_run(summary["index"]["run_id"])
    metrics = run.data.metrics
    assert metrics["eval_none_top1"] == 1.0
    assert {"eval_top1", "eval_top10", "eval_mrr", "eval_phone_top1", "eval_mp3_64k_top1",
            "eval_tag_precision_at_5", "eval_version_mrr"} <= set(metrics)
    # The same excerpts through the embedding alone: what the fingerprint index adds (#12).
    assert metrics["eval_phone_top1"] >= metrics["eval_embedding_only_phone_top1"]
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert names == {"evaluation/evaluation.json", "evaluation/evaluation.png"}


def test_rerun_builds_and_registers_nothing_new(indexed):
    cfg, *_, summary = indexed
    again = run_pipeline(cfg, ["index", "evaluate", "register"])
    assert again["index"]["built"] is False and again["index"]["run_id"] == summary["index"]["run_id"]
    assert again["evaluate"]["evaluated"] is False
    assert again["register"]["registered"] is False and again["register"]["version"] == "1"


def test_whole_track_ranks_itself_first_with_score_one(indexed):
    _, _, root, meta, model, _ = indexed
    track = meta[0]
    results = ask(model, (root / track.file).read_bytes())
    assert results[0]["path"].endswith(track.file)
    assert results[0]["combined_score"] == pytest.approx(1.0)
    assert results[0]["title"] == track.title and track.style in results[0]["tags"]
    evidence = results[0]["evidence"]
    assert all({"query_start_s", "clip_start_s", "distance", "similarity"} <= set(m) for m in evidence)


def test_mp3_excerpt_at_an_odd_offset_finds_its_source(indexed):
    _, _, root, meta, model, _ = indexed
    hits = 0
    for track in meta[:6]:
        wave = load_audio(root / track.file, 44100, offset_s=3.7, duration_s=30.0)
        buffer = io.BytesIO()
        sf.write(buffer, wave, 44100, format="MP3")
        results = ask(model, buffer.getvalue())
        hits += results[0]["path"].endswith(track.file)
    assert hits == 6


def test_alternate_take_ranks_its_sibling_above_other_styles(indexed):
    _, _, root, meta, model, _ = indexed
    groups: dict[str, list] = {}
    for t in meta:
        if t.motif_id:
            groups.setdefault(t.motif_id, []).append(t)
    pairs = [(g[0], g[1]) for g in groups.values() if len(g) >= 2]
    assert pairs, "the sample catalogue must hold alternate takes"
    for take, sibling in pairs:
        results = ask(model, (root / take.file).read_bytes(), max_results=20)
        ranked = [r["path"].rsplit("/", 1)[-1] for r in results if not r["path"].endswith(take.file)]
        other_styles = [t.file for t in meta if t.style not in (take.style, sibling.style)]
        sibling_rank = ranked.index(sibling.file) if sibling.file in ranked else len(ranked)
        better_unrelated = [f for f in ranked[:sibling_rank] if f in other_styles]
        assert not better_unrelated, (take.file, sibling.file, ranked)


def test_cli_query_prints_ranked_songs_and_json(indexed, capsys):
    _, overrides, root, meta, _, _ = indexed
    args = ["query", str(root / meta[1].file), "--conf", str(CONF)] + [x for o in overrides for x in ("--set", o)]
    assert main(args + ["--json", "--top", "3"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["results"]) <= 3 and payload["results"][0]["path"].endswith(meta[1].file)
    assert main(args + ["--exclude-self", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert not any(r["path"].endswith(meta[1].file) for r in payload["results"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "rank" in out and meta[1].file in out.splitlines()[2]


def test_bad_queries_are_clear_errors(indexed):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    *_, model, _ = indexed
    bad = [
        (pd.DataFrame({"audio_b64": ["not base64!!"]}), {}, "not valid base64"),
        (pd.DataFrame({"audio_b64": [b64(b"just some text, not audio")]}), {}, "cannot decode"),
        (pd.DataFrame({"audio_b64": [b64(b"RIFF")]}), {"max_results": 0}, "max_results"),
        (pd.DataFrame({"path": ["/etc/passwd"]}), {}, "disabled"),
    ]
    for frame, params, message in bad:
        with pytest.raises(MlflowException, match=message):
            model.predict(frame, params=params)


def test_served_model_answers_invocations(indexed, tmp_path):
    from soundalike.serving import local_server

    cfg, _, root, meta, _, _ = indexed
    with local_server(cfg, log_path=tmp_path / "serve.log") as server:
        body = {"dataframe_records": [{"audio_b64": b64((root / meta[2].file).read_bytes())}],
                "params": {"max_results": 3}}
        request = urllib.request.Request(f"{server.url}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        results = answer["predictions"][0]["results"]
        assert results[0]["path"].endswith(meta[2].file) and len(results) <= 3
        bad = urllib.request.Request(f"{server.url}/invocations",
                                     data=json.dumps({"dataframe_records": [{"audio_b64": "%%%"}]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=60)
        assert err.value.code == 400


def test_phone_band_excerpt_through_the_registered_model_reports_its_source_and_offset(indexed):
    from soundalike import degrade

    _, _, root, meta, model, _ = indexed
    track = meta[4]
    wave = load_audio(root / track.file, 44100, offset_s=6.3, duration_s=15.0)
    data = degrade.encode(*degrade.apply("phone+mp3_64k", wave, 44100, rng=np.random.default_rng(0)), "wav")
    import pandas as pd

    out = model.predict(pd.DataFrame({"audio_b64": [b64(data)]}), params={"max_results": 3})[0]
    assert out["results"][0]["path"].endswith(track.file)
    assert out["identified"]["track_id"] == out["results"][0]["track_id"]
    assert out["results"][0]["match"]["confident"] is True
    # Generated tracks repeat their bars, so an excerpt may align with a repeat: it lies in the track.
    assert -0.5 <= out["results"][0]["match"]["offset_s"] <= track.duration_s - 15.0 + 0.5
    assert {"combined_score", "votes", "total_similarity", "evidence"} <= set(out["results"][0])


def test_a_changed_query_config_is_registered_and_served_and_going_back_serves_the_first(indexed):
    """The served model bakes in the `query` section: changing it must reach the endpoint
    without a rebuild of the index (and going back must not register a third copy)."""
    from soundalike_pipelines.index_build import CATALOGUE_TAG, catalogue_digest

    cfg, overrides, *_ , summary = indexed
    run = mlflow.get_run(summary["index"]["run_id"])
    assert run.data.tags[CATALOGUE_TAG] == catalogue_digest(
        r.track_id for r in get_spark(cfg).table(cfg.tables.name("tracks")).collect())

    def champion_config():
        local = mlflow.artifacts.download_artifacts(f"models:/{cfg.mlflow.model_name}@champion")
        return json.loads(next(Path(local).rglob("config.json")).read_text())

    changed = run_pipeline(load_config(CONF, overrides + ["query.vote_weight=0.7"]), ["index", "register"])
    assert changed["index"]["built"] is False  # same index ...
    assert changed["register"]["registered"] is True  # ... registered again with the new query section
    assert changed["register"]["champion"] == changed["register"]["version"] != summary["register"]["version"]
    assert champion_config()["query"]["vote_weight"] == 0.7
    back = run_pipeline(cfg, ["index", "register"])
    assert back["register"]["registered"] is False
    assert back["register"]["champion"] == summary["register"]["version"]
    assert champion_config()["query"]["vote_weight"] == cfg.query.vote_weight
