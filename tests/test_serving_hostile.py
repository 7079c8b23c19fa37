"""Hostile requests: property-based tests of the decode and request paths, path confinement, and a
fuzz run of a few thousand requests against the live local scoring server (0 server errors, 0
hangs, memory flat)."""

from __future__ import annotations

import base64
import io
import json
import random
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

mlflow = pytest.importorskip("mlflow")

from conftest import melody  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from soundalike.audio import load_audio  # noqa: E402
from soundalike.errors import AudioDecodeError, ParameterError  # noqa: E402

pytestmark = pytest.mark.slow


def _wav(seconds: float, sr: int = 22050, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, melody(sr, seconds, seed=seed), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


VALID = {fmt: None for fmt in ("WAV", "FLAC", "OGG")}


def _valid(fmt: str) -> bytes:
    if VALID[fmt] is None:
        buf = io.BytesIO()
        sf.write(buf, melody(22050, 3.0, seed=1), 22050, format=fmt)
        VALID[fmt] = buf.getvalue()
    return VALID[fmt]


@st.composite
def damaged_audio(draw):
    """A valid short file with bytes overwritten, cut or appended; or arbitrary bytes."""
    if draw(st.booleans()):
        return draw(st.binary(min_size=0, max_size=2048))
    data = bytearray(_valid(draw(st.sampled_from(sorted(VALID)))))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged_audio(), sr=st.sampled_from([8000, 16000, 22050, 48000]))
def test_decoding_any_bytes_gives_audio_or_a_decode_error_never_a_crash(data, sr):
    try:
        wave = load_audio(data, sr)
    except AudioDecodeError as exc:
        assert str(exc)
        return
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.size > 0 and np.all(np.isfinite(wave))


def _bad_request(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and exc.error_code == "INVALID_PARAMETER_VALUE"


junk_values = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=50), st.booleans(),
    st.binary(max_size=100).map(lambda b: base64.b64encode(b).decode()),
    st.lists(st.integers(), max_size=3),
)
param_values = st.one_of(junk_values, st.sampled_from([0, -1, 10**9, 1e308, float("inf"), "5", [""], ["a"] * 3]))


@settings(max_examples=120, deadline=20000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.dictionaries(st.sampled_from(["audio_b64", "text", "path", "junk", "AUDIO"]), junk_values,
                                  max_size=3), min_size=0, max_size=3),
    params=st.dictionaries(st.sampled_from(["max_results", "top_k_per_chunk", "vote_weight", "exclude_track_ids",
                                            "max_query_seconds", "nonsense"]), param_values, max_size=3),
)
def test_any_request_to_the_model_is_answered_or_refused_as_a_bad_request(registered_search_model, rows, params):
    model = registered_search_model.model
    frame = pd.DataFrame(rows) if rows else pd.DataFrame()
    try:
        out = model.predict(frame, params=params)
    except Exception as exc:  # noqa: BLE001 - the assertion is about which exceptions
        assert _bad_request(exc), f"{type(exc).__name__}: {exc}"
        return
    assert isinstance(out, list) and all("results" in o for o in out)


def test_paths_are_confined_to_the_allowed_root_and_disabled_by_default(registered_search_model, tmp_path):
    ns = registered_search_model
    inside = ns.root / ns.meta[0].file
    outside = tmp_path / "secret.wav"
    outside.write_bytes(_wav(12.0))
    link = ns.root / "escape.wav"
    link.symlink_to(outside)
    try:
        with pytest.raises(MlflowException, match="disabled"):  # the served model: bytes only
            ns.model.predict(pd.DataFrame({"path": [str(inside)]}))
        local = mlflow.pyfunc.load_model(ns.uri, model_config={"allowed_path_root": str(ns.root)})
        assert local.predict(pd.DataFrame({"path": [str(inside)]}))[0]["results"]
        for escape in (str(ns.root / ".." / outside.relative_to(tmp_path.parent)), str(link), str(outside),
                       "/etc/passwd", str(ns.root)):
            with pytest.raises(MlflowException, match="must be an existing file under"):
                local.predict(pd.DataFrame({"path": [escape]}))
    finally:
        link.unlink()


def _requests(rng: random.Random, good: bytes, limit: int) -> list[tuple[bytes, str]]:
    """(body, kind) pairs: junk of every shape, plus real queries."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    # One over-limit body, shared: ~200 copies of a 67 MB string held the test process at 15 GB.
    huge = json.dumps({"dataframe_records": [{"audio_b64": "A" * (limit * 4 // 3 + 400)}]}).encode()
    out = []
    for i in range(2000):
        kind = rng.choice(["bytes", "b64", "json", "columns", "params", "huge", "empty", "text", "good", "split"])
        if kind == "bytes":
            body = rng.randbytes(rng.randint(0, 300))
        elif kind == "b64":
            body = json.dumps({"dataframe_records": [{"audio_b64": rng.choice([
                b64(rng.randbytes(rng.randint(1, 3000))), "%%%not base64", b64(good[: rng.randint(1, len(good))]),
                "", "=" * rng.randint(1, 9)])}]}).encode()
        elif kind == "json":
            body = rng.choice([b"{", b"[]", b"null", b'{"dataframe_records": 5}', b'{"inputs": {"x": [1]}}',
                               json.dumps({"dataframe_records": [{}]}).encode()])
        elif kind == "columns":
            body = json.dumps({"dataframe_records": [{rng.choice(["x", "audio", "Audio_B64"]): "abc"}]}).encode()
        elif kind == "params":
            body = json.dumps({"dataframe_records": [{"audio_b64": b64(good)}],
                               "params": {rng.choice(["max_results", "top_k_per_chunk", "vote_weight"]):
                                          rng.choice([0, -5, 10**9, 1e300, "x", None, [1]])}}).encode()
        elif kind == "huge":
            body = huge
        elif kind == "empty":
            body = b""
        elif kind == "text":
            body = json.dumps({"dataframe_records": [{"text": "x" * rng.randint(1, 2000)}]}).encode()
        elif kind == "split":
            body = json.dumps({"dataframe_split": {"columns": ["audio_b64"], "data": [[rng.randint(0, 9)]]}}).encode()
        else:
            body = json.dumps({"dataframe_records": [{"audio_b64": b64(good)}], "params": {"max_results": 3}}).encode()
        out.append((body, kind))
    return out


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


def test_fuzzing_the_live_server_gives_no_server_errors_no_hangs_and_flat_memory(registered_search_model, tmp_path):
    from soundalike.serving import local_server

    ns = registered_search_model
    good = (ns.root / ns.meta[1].file).read_bytes()
    requests = _requests(random.Random(7), _wav(12.0), ns.cfg.query.max_query_bytes)
    with local_server(ns.cfg, model_uri=ns.uri, log_path=tmp_path / "serve.log") as server:
        assert _post(server.url, json.dumps({"dataframe_records": [{"audio_b64": base64.b64encode(good).decode()}]})
                     .encode()) == 200
        with ThreadPoolExecutor(4) as pool:  # warm-up: allocator and caches settle
            list(pool.map(lambda r: _post(server.url, r[0]), requests[:300]))
        before = server.rss_bytes()
        with ThreadPoolExecutor(4) as pool:  # a hang would exceed the 60 s client timeout and fail
            codes = list(pool.map(lambda r: _post(server.url, r[0]), requests))
        after = server.rss_bytes()
    by_kind = {}
    for (_, kind), code in zip(requests, codes):
        by_kind.setdefault(kind, set()).add(code)
    assert all(code < 500 for code in codes), by_kind
    assert by_kind["good"] == {200}
    assert by_kind["huge"] == {400} and by_kind["bytes"] <= {400, 415}
    assert after - before < 150 * 2**20, f"server memory grew {(after - before) / 2**20:.0f} MB over 2,000 requests"
