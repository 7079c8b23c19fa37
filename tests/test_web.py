"""The web app's JSON API: search by upload and by text, compare, catalogue clip audio, limits.

Every request carries real audio bytes from the generated sample catalogue; the model behind the
app is the registered ``soundalike_search`` pyfunc (``registered_search_model`` in conftest.py),
in this process or behind MLflow's own scoring server for the remote backend.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
mlflow = pytest.importorskip("mlflow")

from fastapi.testclient import TestClient  # noqa: E402

from soundalike.audio import load_audio  # noqa: E402
from soundalike.config import load_config  # noqa: E402
from soundalike.errors import ConfigError  # noqa: E402
from soundalike.web.app import FORM_OVERHEAD_BYTES, create_app  # noqa: E402
from soundalike.web.backends import BackendError, Catalogue, LocalBackend, RemoteBackend  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(registered_search_model):
    m = registered_search_model
    backend = LocalBackend(m.model, m.uri)
    return m, backend, TestClient(create_app(m.cfg, backend))


def track_bytes(m, i: int) -> bytes:
    return (m.root / m.meta[i].file).read_bytes()


def track_id(m, i: int) -> str:
    return hashlib.sha256(track_bytes(m, i)).hexdigest()


def excerpt_wav(m, i: int, offset_s: float = 3.7, duration_s: float = 25.0) -> bytes:
    """A WAV excerpt of catalogue track ``i``, starting off the clip grid."""
    wave = load_audio(m.root / m.meta[i].file, 44100, offset_s=offset_s, duration_s=duration_s)
    buffer = io.BytesIO()
    sf.write(buffer, wave, 44100, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def search(client, data: bytes, name: str = "query.wav", **form):
    return client.post("/api/search", files={"file": (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in form.items()})


# --------------------------------------------------------------------------- search


def test_excerpt_upload_finds_its_source_with_scores_and_matched_clips(served):
    m, backend, client = served
    response = search(client, excerpt_wav(m, 0))
    assert response.status_code == 200, response.text
    out = response.json()
    first = out["results"][0]
    assert first["track_id"] == track_id(m, 0) and first["title"] == m.meta[0].title
    assert first["rank"] == 1 and first["combined_score"] == pytest.approx(1.0)
    assert first["votes"] >= 1 and first["total_similarity"] > 0
    assert out["clip_s"] == 10.0 and out["query_clips"] == 3 and out["query_seconds"] == pytest.approx(25.0, abs=0.01)
    assert 1 <= len(out["results"]) <= 10
    for match in first["evidence"]:
        assert match["distance"] == pytest.approx(1 - match["similarity"], abs=1e-5)
        assert match["query_start_s"] in (0.0, 10.0, 20.0)
    # The app answers exactly as the model does when asked directly.
    direct = m.model.predict(pd.DataFrame({"audio_b64": [base64.b64encode(excerpt_wav(m, 0)).decode()]}))[0]
    assert [r["track_id"] for r in out["results"]] == [r["track_id"] for r in direct["results"]]
    assert [r["combined_score"] for r in out["results"]] == [r["combined_score"] for r in direct["results"]]


def test_search_answer_keeps_the_excerpts_landmark_match_and_identification(fingerprinted_search_model):
    """The web answer is the ``soundalike query --json`` shape: ``match`` per song and ``identified``."""
    m = fingerprinted_search_model
    client = TestClient(create_app(m.cfg, LocalBackend(m.model, m.uri)))
    query = excerpt_wav(m, 2, offset_s=6.3, duration_s=15.0)
    out = search(client, query).json()
    direct = m.model.predict(pd.DataFrame({"audio_b64": [base64.b64encode(query).decode()]}))[0]
    assert direct["identified"] is not None and direct["identified"]["track_id"] == track_id(m, 2)
    assert out["identified"] == direct["identified"]
    assert [r["match"] for r in out["results"]] == [r["match"] for r in direct["results"]]
    top = out["results"][0]["match"]
    assert top["confident"] is True and set(top) == {"offset_s", "aligned_hits", "query_hashes", "hit_ratio",
                                                      "peak_share", "speed", "confident"}
    assert "identified" in client.get("/openapi.json").json()["components"]["schemas"]["SearchResult"]["properties"]


def test_params_and_exclude_self_reach_the_model(served):
    m, _, client = served
    data = track_bytes(m, 1)
    out = search(client, data, name=m.meta[1].file, max_results=3, top_k_per_chunk=40).json()
    assert len(out["results"]) == 3 and out["results"][0]["track_id"] == track_id(m, 1)
    assert len(search(client, data, max_results=1).json()["results"]) == 1
    out = search(client, data, name=m.meta[1].file, exclude_self="true").json()
    assert track_id(m, 1) not in [r["track_id"] for r in out["results"]]


def test_info_defaults_are_what_a_search_without_params_runs_with(served):
    """The app's query.* settings differ from the model's logged ones: /api/info must not lie."""
    m, backend, _ = served
    cfg = load_config(None, m.overrides + ["query.top_k_per_chunk=1", "query.vote_weight=1.0", "query.max_results=3"])
    client = TestClient(create_app(cfg, backend))
    defaults = client.get("/api/info").json()["defaults"]
    assert defaults == {"max_results": 3, "top_k_per_chunk": 1, "vote_weight": 1.0}
    query = excerpt_wav(m, 0)
    out = search(client, query).json()  # what the page sends: no params but max_results
    direct = m.model.predict(pd.DataFrame({"audio_b64": [base64.b64encode(query).decode()]}), params=defaults)[0]
    assert [(r["track_id"], r["combined_score"]) for r in out["results"]] == \
        [(r["track_id"], r["combined_score"]) for r in direct["results"]]
    # top_k_per_chunk=1: one catalogue clip per query clip, so as many votes as query clips.
    assert len(out["results"]) <= 3 and sum(r["votes"] for r in out["results"]) == out["query_clips"]


@pytest.mark.parametrize("form, status, message", [
    ({"max_results": 0}, 400, "max_results must be in"),
    ({"vote_weight": 1.5}, 400, "vote_weight must be in"),
    ({"max_results": "ten"}, 422, "max_results"),
])
def test_bad_parameters_get_the_models_message(served, form, status, message):
    m, _, client = served
    response = search(client, excerpt_wav(m, 2, duration_s=12.0), **form)
    assert response.status_code == status
    assert message in str(response.json()["detail"])


@pytest.mark.parametrize("data, message", [
    (b"just some text, not audio at all", "cannot decode"),
    (b"", "empty"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot decode"),
])
def test_bad_files_are_400_with_a_readable_message(served, data, message):
    _, _, client = served
    response = search(client, data, name="notes.txt")
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_too_short_audio_says_how_much_is_needed(served):
    _, _, client = served
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(22050, np.float32), 22050, format="WAV")
    response = search(client, buffer.getvalue())
    assert response.status_code == 400 and "clips.min_tail_s" in response.json()["detail"]


def test_text_search_without_a_text_tower_is_a_clear_400(served):
    _, backend, client = served
    assert client.get("/api/info").json()["text_search"] is False
    response = client.post("/api/search/text", json={"text": "calm solo piano"})
    assert response.status_code == 400 and "no text tower" in response.json()["detail"]
    assert client.post("/api/search/text", json={"text": ""}).status_code == 422
    for blank in ("   ", "\n\t"):
        response = client.post("/api/search/text", json={"text": blank})
        assert response.status_code == 400 and "text is empty" in response.json()["detail"]
        with pytest.raises(mlflow.exceptions.MlflowException, match="query row 0: text is empty"):
            backend.model.predict(pd.DataFrame({"text": [blank]}))
    response = client.post("/api/search/text", json={"text": "x" * 1001})
    assert response.status_code == 400 and "at most 1000 characters" in response.json()["detail"]


def test_text_search_with_a_clap_model_ranks_catalogue_songs(registered_search_model, tmp_path):
    """A registered model over a tiny randomly initialised CLAP (text tower included) answers text."""
    from conftest import register_search_model
    from test_clap import save_tiny_transformers_clap, tiny_catalogue

    m = registered_search_model
    weights = save_tiny_transformers_clap(tmp_path / "clap")
    paths = tiny_catalogue(tmp_path / "cat")
    cfg = load_config(None, m.overrides + ["embedder.name=clap", f"embedder.weights_path={weights}",
                                           "embedder.batch_size=4", "mlflow.model_name=soundalike_search_clap"])
    uri = register_search_model([{"path": p, "title": p.stem, "tags": []} for p in paths], cfg, tmp_path / "index")
    client = TestClient(create_app(cfg, LocalBackend(mlflow.pyfunc.load_model(uri), uri)))
    assert client.get("/api/info").json()["text_search"] is True
    response = client.post("/api/search/text", json={"text": "calm solo piano", "max_results": 3, "top_k_per_chunk": 6})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["query_text"] == "calm solo piano" and out["query_clips"] == 1
    ids = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in paths}
    assert [r["rank"] for r in out["results"]] == [1, 2, 3] and {r["track_id"] for r in out["results"]} == set(ids)
    assert out["results"][0]["combined_score"] == pytest.approx(1.0)
    assert all(r["title"] == ids[r["track_id"]].stem for r in out["results"])


# --------------------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def small_limit(served):
    """The same model behind an app that accepts at most 300 kB per file."""
    m, backend, _ = served
    cfg = load_config(None, m.overrides + ["query.max_query_bytes=300000"])
    return cfg, create_app(cfg, backend)


def test_upload_over_the_limit_is_413_from_its_declared_length(small_limit, served):
    m, _, _ = served
    _, app = small_limit
    client = TestClient(app)
    big = excerpt_wav(m, 0, duration_s=20.0)  # 1.7 MB
    response = search(client, big)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    # Just over the per-file limit but inside the form overhead: refused by the per-file check.
    response = search(client, big[:300_001])
    assert response.status_code == 413 and "query.max_query_bytes=300000" in response.json()["detail"]
    assert search(client, big[:200_000]).status_code == 400  # a truncated WAV: under the limit, bad audio


def test_chunked_upload_over_the_limit_is_refused_before_it_is_all_sent(small_limit):
    cfg, app = small_limit
    limit = cfg.query.max_query_bytes + FORM_OVERHEAD_BYTES
    with serve_in_thread(app) as (host, port):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n")
            head = (b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
                    b"Content-Type: audio/wav\r\n\r\n")
            sent = 0
            for chunk in [head] + [b"\0" * 65536] * (limit // 65536 + 2):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            # The body never ends (no terminating chunk): only a server that stopped reading answers.
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < limit + 3 * 65536


# --------------------------------------------------------------------------- compare


def test_compare_returns_spectrogram_plot_timeline_and_offset(served):
    m, _, client = served
    a = excerpt_wav(m, 3, offset_s=0.0, duration_s=20.0)
    late = excerpt_wav(m, 3, offset_s=0.0, duration_s=18.0)
    wave = sf.read(io.BytesIO(late), dtype="float32")[0]
    buffer = io.BytesIO()
    sf.write(buffer, np.concatenate([np.zeros(2 * 44100, np.float32), wave]), 44100, format="FLAC")
    response = client.post("/api/compare", files={"a": ("a.wav", a), "b": ("b.flac", buffer.getvalue())},
                           data={"seconds": "15", "align": "true"})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["offset_s"] == pytest.approx(2.0, abs=0.05)
    assert out["mean_cosine"] > 0.95 and len(out["timeline"]) == out["frames"] > 500
    png = base64.b64decode(out["png_b64"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image

    assert Image.open(io.BytesIO(png)).size == (1300, 700)


def test_compare_of_a_matched_clip_with_the_query_clip(served):
    """What the page's Compare button sends: the query from its clip start, the catalogue clip."""
    m, _, client = served
    clip = client.get(f"/api/clips/{track_id(m, 4)}/audio", params={"start_s": 10.0}).content
    query = excerpt_wav(m, 4, offset_s=0.0, duration_s=30.0)
    same = client.post("/api/compare", files={"a": ("q.wav", query), "b": ("clip.wav", clip)},
                       data={"seconds": "10", "start_a_s": "10", "align": "false"}).json()
    other = client.post("/api/compare", files={"a": ("q.wav", excerpt_wav(m, 5, 0.0, 30.0)), "b": ("clip.wav", clip)},
                        data={"seconds": "10", "start_a_s": "10", "align": "false"}).json()
    assert same["mean_cosine"] > 0.99 > other["mean_cosine"]


def test_compare_refuses_bad_input(served):
    m, _, client = served
    good = excerpt_wav(m, 0, duration_s=12.0)
    response = client.post("/api/compare", files={"a": ("a.wav", good), "b": ("b.txt", b"not audio")})
    assert response.status_code == 400 and response.json()["detail"].startswith("cannot decode b.txt:")
    response = client.post("/api/compare", files={"a": ("a.wav", good), "b": ("b.wav", good)}, data={"seconds": "999"})
    assert response.status_code == 422
    assert client.post("/api/compare", files={"a": ("a.wav", good)}).status_code == 422


@pytest.mark.parametrize("start_a_s", ["1e308", "inf", "3600"])
def test_compare_start_past_the_end_is_a_readable_refusal_not_a_500(served, start_a_s):
    m, _, client = served
    good = excerpt_wav(m, 0, duration_s=12.0)
    response = client.post("/api/compare", files={"a": ("a.wav", good), "b": ("b.wav", good)},
                           data={"start_a_s": start_a_s})
    assert response.status_code in (400, 422), response.text
    detail = str(response.json()["detail"])
    assert "start_a_s" in detail and "offset_s" not in detail
    if response.status_code == 400:
        assert detail.startswith("cannot decode a.wav:") and "past its end" in detail


def test_compare_refuses_float_audio_of_absurd_magnitude(served):
    m, _, client = served
    buffer = io.BytesIO()
    sf.write(buffer, np.full(44100 * 12, 1e30, np.float32), 44100, format="WAV", subtype="FLOAT")
    good = excerpt_wav(m, 0, duration_s=12.0)
    response = client.post("/api/compare", files={"a": ("a.wav", good), "b": ("junk.wav", buffer.getvalue())})
    assert response.status_code == 400 and "decoded samples reach 1e+30" in response.json()["detail"]
    response = search(client, buffer.getvalue(), name="junk.wav")
    assert response.status_code == 400 and "decoded samples reach 1e+30" in response.json()["detail"]


# --------------------------------------------------------------------------- clip audio


def test_clip_audio_is_cut_from_the_catalogue_file_on_demand(served):
    m, _, client = served
    path = m.root / m.meta[2].file
    response = client.get(f"/api/clips/{track_id(m, 2)}/audio", params={"start_s": 10.0})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    wave, sr = sf.read(io.BytesIO(response.content), dtype="float32")
    expected = load_audio(path, 44100, offset_s=10.0, duration_s=10.0)
    assert sr == 44100 and wave.shape == expected.shape == (441000,)
    assert np.abs(wave - expected).max() < 2e-4  # 16-bit quantisation
    # Longer asks are clamped to the clip length; shorter ones honoured.
    long = client.get(f"/api/clips/{track_id(m, 2)}/audio", params={"start_s": 0, "duration_s": 600})
    assert sf.info(io.BytesIO(long.content)).frames == 441000
    short = client.get(f"/api/clips/{track_id(m, 2)}/audio", params={"start_s": 0, "duration_s": 2.5})
    assert sf.info(io.BytesIO(short.content)).frames == 110250


def test_clip_audio_serves_only_catalogue_tracks(served):
    m, _, client = served
    assert client.get("/api/clips/0123abcd/audio").status_code == 404
    for probe in ("/api/clips/..%2F..%2Fetc%2Fpasswd/audio", "/api/clips/%2Fetc%2Fpasswd/audio",
                  "/api/clips/x/audio?path=/etc/passwd"):
        response = client.get(probe)
        assert response.status_code in (404, 422) and b"root:" not in response.content
    past_end = client.get(f"/api/clips/{track_id(m, 0)}/audio", params={"start_s": 3600})
    assert past_end.status_code == 400
    assert client.get(f"/api/clips/{track_id(m, 0)}/audio", params={"start_s": -1}).status_code == 422
    for huge in ("1e308", "inf"):
        response = client.get(f"/api/clips/{track_id(m, 0)}/audio", params={"start_s": huge})
        assert response.status_code == 422 and "start_s" in str(response.json()["detail"])
    response = client.get(f"/api/clips/{track_id(m, 0)}/audio", params={"start_s": 500000})
    assert response.status_code == 400 and "no audio samples after offset 500000 s" in response.json()["detail"]


# --------------------------------------------------------------------------- page and schema


def test_page_static_files_and_openapi_schema(served):
    _, _, client = served
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js"' in page.text
    assert client.get("/static/app.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/search/text", "/api/compare", "/api/clips/{track_id}/audio", "/api/info"} <= set(schema["paths"])
    assert "combined_score" in schema["components"]["schemas"]["Song"]["properties"]


def test_page_answers_head_and_every_response_forbids_sniffing_and_framing(served):
    m, _, client = served
    head = client.head("/")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html") and not head.content
    too_big = client.post("/api/search/text", content=b"{" + b" " * 70000 + b"}",
                          headers={"Content-Type": "application/json"})
    responses = [client.get("/"), head, client.get("/api/info"), client.get("/static/app.js"),
                 search(client, b"not audio"), too_big,
                 client.get(f"/api/clips/{track_id(m, 0)}/audio", params={"start_s": 0})]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert response.headers["x-frame-options"] == "DENY", response.url
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.url
    # The text endpoint's limit is its own 64 KiB, not query.max_query_bytes.
    assert too_big.status_code == 413
    detail = too_big.json()["detail"]
    assert "65536 bytes" in detail and "64 KiB" in detail and "max_query_bytes" not in detail, detail


# --------------------------------------------------------------------------- remote backend


@contextlib.contextmanager
def serve_in_thread(app):
    """Run an ASGI app under uvicorn on a free loopback port; yields (host, port)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_remote_backend_forwards_to_a_serving_endpoint(served):
    """The app over MLflow's own scoring server (what `mlflow models serve` runs) answers as locally."""
    from mlflow.pyfunc import scoring_server

    m, _, local_client = served
    seen_auth = []
    scoring = scoring_server.init(m.model)

    async def recording(scope, receive, send):
        if scope["type"] == "http":
            seen_auth.append(dict(scope["headers"]).get(b"authorization"))
        await scoring(scope, receive, send)

    with serve_in_thread(recording) as (host, port):
        env = {"SOUNDALIKE_SERVING_URL": f"http://{host}:{port}/invocations", "DATABRICKS_TOKEN": "t0ken"}
        backend = RemoteBackend.from_env(m.cfg, env)
        client = TestClient(create_app(m.cfg, backend))
        query = excerpt_wav(m, 1)
        remote = search(client, query, max_results=5)
        assert remote.status_code == 200, remote.text
        local = search(local_client, query, max_results=5).json()
        assert remote.json()["results"] == local["results"]
        assert seen_auth[-1] == b"Bearer t0ken"
        bad = search(client, b"not audio at all")
        assert bad.status_code == 400 and "cannot decode" in bad.json()["detail"]
        assert search(client, query, max_results=0).status_code == 400
        info = client.get("/api/info").json()
        assert info["backend"] == "remote" and info["clip_audio"] is False and info["text_search"] is None
        # Catalogue audio needs the catalogue here: 501 without a track table, served with one.
        missing = client.get(f"/api/clips/{track_id(m, 1)}/audio")
        assert missing.status_code == 501 and "web.tracks_file" in missing.json()["detail"]
        tracks = backend_tracks(m)
        with_files = RemoteBackend(backend.url, None, clip_s=10.0, catalogue=Catalogue(tracks))
        clip = TestClient(create_app(m.cfg, with_files)).get(f"/api/clips/{track_id(m, 1)}/audio")
        assert clip.status_code == 200 and sf.info(io.BytesIO(clip.content)).duration == pytest.approx(10.0)


def test_remote_backend_refusals_are_the_models_own_short_message(served):
    """MLflow's server wraps a refusal in "Failed to predict data '<the whole input>'"; the app
    answers with the model's message alone, as the local backend does, never the user's base64."""
    from mlflow.pyfunc import scoring_server

    m, _, local_client = served
    with serve_in_thread(scoring_server.init(m.model)) as (host, port):
        client = TestClient(create_app(m.cfg, RemoteBackend(f"http://{host}:{port}/invocations", None, clip_s=10.0)))
        for data, form in [(b"not audio at all, " * 40, {}), (excerpt_wav(m, 1), {"max_results": 0})]:
            remote, local = search(client, data, **form), search(local_client, data, **form)
            assert remote.status_code == local.status_code == 400
            detail = remote.json()["detail"]
            assert detail == local.json()["detail"]
            assert base64.b64encode(data).decode()[:40] not in detail and "Failed to predict" not in detail
            assert len(detail) < 300, detail


def backend_tracks(m) -> pd.DataFrame:
    return pd.DataFrame({"track_id": [track_id(m, i) for i in range(len(m.meta))],
                         "path": [str(m.root / t.file) for t in m.meta]})


def test_remote_endpoint_url_comes_from_the_environment(registered_search_model, tmp_path):
    cfg = registered_search_model.cfg
    url = RemoteBackend.from_env(cfg, {"DATABRICKS_HOST": "adb-1.azuredatabricks.net/"}).url
    assert url == "https://adb-1.azuredatabricks.net/serving-endpoints/soundalike-search/invocations"
    with pytest.raises(ConfigError, match=r"\$SOUNDALIKE_SERVING_URL.*\$DATABRICKS_HOST"):
        RemoteBackend.from_env(cfg, {})
    tracks = tmp_path / "tracks.parquet"
    backend_tracks(registered_search_model).to_parquet(tracks)
    named = load_config(None, registered_search_model.overrides + [f"web.tracks_file={tracks}"])
    assert RemoteBackend.from_env(named, {"SOUNDALIKE_SERVING_URL": "http://x/invocations"}).info.clip_audio
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(BackendError, match="unreachable") as err:
        RemoteBackend(f"http://127.0.0.1:{dead}/invocations", None, clip_s=10.0, timeout_s=5).predict([{"text": "x"}], {})
    assert err.value.status == 502


def test_an_unexpected_500_carries_the_security_headers_too(registered_search_model, monkeypatch):
    m = registered_search_model
    backend = LocalBackend(m.model, m.uri)

    def broken(records, params):
        raise RuntimeError("the backend fell over")

    monkeypatch.setattr(backend, "predict", broken)
    client = TestClient(create_app(m.cfg, backend), raise_server_exceptions=False)
    response = search(client, track_bytes(m, 0))
    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
