"""The ``soundalike_search`` pyfunc and ``soundalike query`` honour the ``query.*`` configuration.

The model is the registered sample-catalogue model (``registered_search_model`` in conftest.py),
or the same index logged again with other ``query.*`` settings; every query is real audio cut
from the generated catalogue.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

mlflow = pytest.importorskip("mlflow")

from conftest import LOCAL_CONF, melody  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from soundalike.audio import load_audio  # noqa: E402
from soundalike.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


def excerpt_wav(m, i: int, offset_s: float = 3.7, duration_s: float = 25.0) -> bytes:
    wave = load_audio(m.root / m.meta[i].file, 44100, offset_s=offset_s, duration_s=duration_s)
    buffer = io.BytesIO()
    sf.write(buffer, wave, 44100, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def b64_frame(data: bytes) -> pd.DataFrame:
    return pd.DataFrame({"audio_b64": [base64.b64encode(data).decode()]})


@pytest.fixture(scope="module")
def tight_model(registered_search_model):
    """The sample index logged again with other query.* settings (20 clips per query clip: more songs)."""
    from soundalike.mlflow_model import configure_mlflow, log_search_model

    m = registered_search_model
    cfg = dataclasses.replace(m.cfg, query=dataclasses.replace(m.cfg.query, max_results=3, max_query_seconds=120.0,
                                                               vote_weight=0.5, top_k_per_chunk=20))
    example = io.BytesIO()
    sf.write(example, melody(8000, 6.0), 8000, format="WAV", subtype="PCM_16")
    experiment_id = configure_mlflow(cfg)
    with mlflow.start_run(experiment_id=experiment_id, run_name="tight"):
        info = log_search_model(Path(cfg.workdir) / "index", cfg, example_audio=example.getvalue(),
                                registered_model_name=None)
    return info.model_uri, mlflow.pyfunc.load_model(info.model_uri)


def test_signature_defaults_are_the_logged_query_config(tight_model):
    uri, _ = tight_model
    params = {p.name: p.default for p in mlflow.models.get_model_info(uri).signature.params.params}
    assert params["max_results"] == 3
    assert params["max_query_seconds"] == 120.0
    assert params["vote_weight"] == 0.5
    assert params["top_k_per_chunk"] == 20


def test_a_request_without_params_runs_with_the_logged_query_config(registered_search_model, tight_model):
    _, model = tight_model
    frame = b64_frame(excerpt_wav(registered_search_model, 0))
    # With the registered model's default max_results (10) this query ranks more than 3 songs.
    assert len(registered_search_model.model.predict(frame, params={"top_k_per_chunk": 20})[0]["results"]) > 3
    out = model.predict(frame)[0]
    assert 1 <= len(out["results"]) <= 3
    assert len(model.predict(frame, params={"max_results": 5})[0]["results"]) > 3
    with pytest.raises(MlflowException, match=r"max_query_seconds must be in \[1, 120\]"):
        model.predict(frame, params={"max_query_seconds": 200.0})


def test_cli_query_top_defaults_to_the_commands_query_max_results(registered_search_model, capsys):
    m = registered_search_model
    args = ["query", str(m.root / m.meta[1].file), "--conf", str(LOCAL_CONF), "--json", "--top-k-per-chunk", "20"]
    args += [x for o in m.overrides for x in ("--set", o)]
    assert main(args + ["--set", "query.max_results=2"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2
    assert main(args + ["--set", "query.max_results=2", "--top", "4"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 4


def test_a_query_longer_than_max_query_seconds_is_refused_before_it_is_decoded(registered_search_model,
                                                                                tight_model, monkeypatch):
    import soundalike.search

    m = registered_search_model
    frame = b64_frame(excerpt_wav(m, 0, offset_s=0.0, duration_s=25.0))
    with pytest.raises(MlflowException, match=r"query row 0: the query is 25\.0 s long.*max_query_seconds=20"):
        m.model.predict(frame, params={"max_query_seconds": 20.0})
    assert m.model.predict(frame, params={"max_query_seconds": 25.0})[0]["query_seconds"] == pytest.approx(25.0)

    # 130 s of audio against the model's own query.max_query_seconds=120: refused from the header.
    _, model = tight_model
    wave = load_audio(m.root / m.meta[0].file, 8000)
    long = io.BytesIO()
    sf.write(long, np.tile(wave, int(np.ceil(130 * 8000 / wave.shape[0])))[: 130 * 8000], 8000, format="WAV",
             subtype="PCM_16")

    def no_decoding(*args, **kwargs):
        raise AssertionError("a query over the limit was decoded")

    monkeypatch.setattr(soundalike.search, "extract_track", no_decoding)
    monkeypatch.setattr(soundalike.search, "load_audio", no_decoding)
    with pytest.raises(MlflowException, match=r"the query is 130\.0 s long; .*max_query_seconds=120 s are refused"):
        model.predict(b64_frame(long.getvalue()))


@pytest.mark.parametrize("setting", ["mlflow.model_name=no_such_model", "mlflow.model_name=no_champion"])
def test_serve_without_a_champion_is_one_line_exit_2_and_starts_no_server(registered_search_model, setting,
                                                                          monkeypatch, capsys):
    import subprocess

    m = registered_search_model
    if setting.endswith("no_champion"):
        from soundalike.mlflow_model import configure_mlflow

        configure_mlflow(m.cfg)
        client = mlflow.MlflowClient()
        if not client.search_registered_models(filter_string="name = 'no_champion'"):
            client.create_registered_model("no_champion")

    def no_server(*args, **kwargs):
        raise AssertionError("a server was started")

    monkeypatch.setattr(subprocess, "call", no_server)
    args = ["serve", "--conf", str(LOCAL_CONF)] + [x for o in m.overrides + [setting] for x in ("--set", o)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("soundalike serve: error: cannot serve model models:/")
    assert ("not found" in err) and "soundalike pipeline" in err, err


def test_names_outside_the_signature_are_dropped_and_a_row_without_audio_or_text_is_refused(registered_search_model):
    """What README says of served requests: MLflow drops unknown params and columns before predict."""
    m = registered_search_model
    frame = b64_frame(excerpt_wav(m, 0))
    plain = m.model.predict(frame, params={"max_results": 2})[0]["results"]
    extra = m.model.predict(frame.assign(junk=[1]), params={"max_results": 2, "max_resluts": 1})[0]["results"]
    assert [r["track_id"] for r in extra] == [r["track_id"] for r in plain] and len(plain) == 2
    with pytest.raises(MlflowException, match=r"audio_b64 .* or path; got none of them \(columns with other names"):
        m.model.predict(pd.DataFrame({"junk": ["x"]}))


def test_the_embedder_model_refuses_a_recording_over_max_query_seconds_instead_of_cutting_it():
    """``soundalike_siamese`` (the registered embedder) answers for whole files: one longer than
    ``query.max_query_seconds`` is refused from its header, as the search model refuses it."""
    from soundalike.config import load_config
    from soundalike.embedders import create_embedder
    from soundalike.extract import extract_track
    from soundalike.mlflow_embedder import SoundalikeEmbedderModel
    from soundalike.sample import synthesize_track

    cfg = load_config(LOCAL_CONF, overrides=["query.max_query_seconds=20", "embedder.device=cpu"])
    model = SoundalikeEmbedderModel()
    model.cfg, model.embedder = cfg, create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)

    def wav(seconds: float) -> bytes:
        buffer = io.BytesIO()
        sf.write(buffer, synthesize_track("bass_groove", duration_s=seconds, sample_rate_hz=22050, seed=4), 22050,
                 format="WAV", subtype="PCM_16")
        return buffer.getvalue()

    with pytest.raises(MlflowException, match=r"row 0: the query is 32\.0 s long; .*max_query_seconds=20 s are refused"):
        model.predict(None, b64_frame(wav(32.0)))
    fits = wav(20.0)
    answer = model.predict(None, b64_frame(fits))[0]
    want = extract_track(fits, model.embedder, cfg.clips)
    assert answer["start_s"] == want.start_s.tolist() == [0.0, 10.0]
    np.testing.assert_allclose(np.array(answer["vectors"]), want.vectors, atol=1e-6)


def test_cli_query_honours_its_max_query_seconds_and_names_the_users_file(registered_search_model, tmp_path, capsys):
    m = registered_search_model
    base = ["--conf", str(LOCAL_CONF)] + [x for o in m.overrides for x in ("--set", o)]
    excerpt = tmp_path / "my excerpt.wav"
    excerpt.write_bytes(excerpt_wav(m, 0, offset_s=0.0, duration_s=25.0))
    # The model allows 600 s; this command's query.max_query_seconds=20 must apply.
    assert main(["query", str(excerpt), *base, "--set", "query.max_query_seconds=20"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(excerpt) in err and "max_query_seconds=20" in err, err
    assert main(["query", str(excerpt), *base, "--set", "query.max_query_seconds=25", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["query_seconds"] == pytest.approx(25.0)

    # Errors found inside the model name the file too, not "<n bytes>" of "query row 0".
    short = tmp_path / "short.wav"
    sf.write(short, melody(8000, 2.0), 8000)
    junk = tmp_path / "junk.wav"
    sf.write(junk, np.full(8000 * 8, 1e30, np.float32), 8000, subtype="FLOAT")
    notes = tmp_path / "notes.wav"
    notes.write_bytes(b"not audio at all\n" * 100)
    for path, reason in ((short, "clips.min_tail_s"), (junk, "decoded samples reach"), (notes, "not a readable")):
        assert main(["query", str(path), *base]) == 2
        err = capsys.readouterr().err.strip()
        assert f"cannot decode {path}: " in err and reason in err, err
        assert "bytes>" not in err and "query row" not in err, err


def test_readme_lists_every_field_of_the_query_json(registered_search_model, capsys):
    """README's `soundalike query --json` shape is the real one (it once left out clip_policy)."""
    import re

    m = registered_search_model
    args = ["query", str(m.root / m.meta[1].file), "--conf", str(LOCAL_CONF), "--json"]
    assert main(args + [x for o in m.overrides for x in ("--set", o)]) == 0
    out = json.loads(capsys.readouterr().out)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Query"):readme.index("**Excerpt identification.**")]
    shape = section[section.index("`--json` prints"):]
    documented = set(re.findall(r"[a-z_]+", shape))
    fields = set(out) | set(out["results"][0]) | set(out["results"][0]["evidence"][0]) | set(out["timings_ms"])
    assert fields <= documented, f"undocumented: {sorted(fields - documented)}"
    assert "Nothing else changes" not in readme


def test_an_m4a_query_is_decoded_once(fingerprinted_search_model, tmp_path, monkeypatch):
    """Length from ffprobe, then one ffmpeg decode shared by the clips and the landmarks."""
    import shutil
    import subprocess

    import soundalike.audio

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    m = fingerprinted_search_model
    wav = tmp_path / "q.wav"
    wav.write_bytes(excerpt_wav(m, 0, offset_s=0.0, duration_s=30.0))
    m4a = tmp_path / "q.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(m4a)],
                   check=True)
    searcher = m.model.unwrap_python_model().searcher
    decodes = []
    real = soundalike.audio._pydub_segment
    monkeypatch.setattr(soundalike.audio, "_pydub_segment", lambda *a, **k: decodes.append(k) or real(*a, **k))
    for source in (m4a, m4a.read_bytes()):
        decodes.clear()
        out = searcher.search(source)
        assert len(decodes) == 1, decodes
        assert out["results"][0]["track_id"] == track_id_of(m, 0)
        assert out["query_seconds"] == pytest.approx(30.0, abs=0.1)
        assert out["identified"]["track_id"] == track_id_of(m, 0)  # the landmarks read the same decode


def track_id_of(m, i: int) -> str:
    import hashlib

    return hashlib.sha256((m.root / m.meta[i].file).read_bytes()).hexdigest()


def test_a_mel_model_packs_no_weights_even_when_a_weights_path_is_set(registered_search_model, tmp_path):
    """The bundle passes the weights volume for every embedder; mel reads none of it."""
    from soundalike.mlflow_model import configure_mlflow, log_search_model

    m = registered_search_model
    volume = tmp_path / "weights"
    (volume / "laion").mkdir(parents=True)
    (volume / "laion" / "model.pt").write_bytes(b"\0" * 100_000)  # someone else's checkpoint
    cfg = dataclasses.replace(m.cfg, embedder=dataclasses.replace(m.cfg.embedder, weights_path=str(volume)))
    assert cfg.embedder.name == "mel"
    example = io.BytesIO()
    sf.write(example, melody(8000, 6.0), 8000, format="WAV", subtype="PCM_16")
    with mlflow.start_run(experiment_id=configure_mlflow(cfg), run_name="mel with a weights path"):
        info = log_search_model(Path(cfg.workdir) / "index", cfg, example_audio=example.getvalue(),
                                registered_model_name=None)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert not list(local.rglob("model.pt")) and not (local / "artifacts" / "weights").exists()
    out = mlflow.pyfunc.load_model(info.model_uri).predict(b64_frame(excerpt_wav(m, 0)))[0]
    assert out["results"][0]["track_id"] == track_id_of(m, 0)  # and it still answers


@pytest.mark.parametrize("command", [["query", "QUERY"], ["web", "--port", "0"], ["serve", "--port", "0"]])
def test_a_mistyped_workdir_is_named_and_nothing_is_created_there(command, tmp_path, capsys):
    query = tmp_path / "q.wav"
    sf.write(query, melody(22050, 12.0), 22050)
    work = tmp_path / "wrok"  # no pipeline ever ran here
    args = [str(query) if a == "QUERY" else a for a in command]
    assert main([*args, "--conf", str(LOCAL_CONF), "--set", f"workdir={work}"]) == 2
    err = capsys.readouterr().err
    assert f"no MLflow store at {work.resolve() / 'mlflow.db'}" in err and "check --set workdir" in err
    assert not work.exists()
