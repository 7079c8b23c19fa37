"""The web app: a JSON API over the search model, and the page that uses it.

:func:`create_app` wires a :class:`~soundalike.web.backends.SearchBackend` (the registered pyfunc
in this process, or a serving endpoint) into a FastAPI app. The app adds only what a browser
needs on top of serving: multipart uploads with size limits, catalogue clip audio, and the
two-track comparison. Queries go to the backend in the serving request shape, so request
validation (base64, decodability, length, parameters) is the pyfunc's, not a second copy.

Endpoints (OpenAPI schema at ``/openapi.json``):

============================================  ================================================
``GET  /``                                    the search page (``static/index.html``)
``GET  /api/info``                            model, clip length, limits, text search support
``POST /api/search``                          multipart ``file`` (+ params) → ranked songs
``POST /api/search/text``                     JSON ``{"text", ...params}`` → ranked songs
``POST /api/compare``                         multipart ``a``, ``b`` → mel-cosine comparison
``GET  /api/clips/{track_id}/audio``          WAV of a catalogue clip, cut on demand
============================================  ================================================

Examples
--------
>>> app = create_app(cfg, LocalBackend(mlflow.pyfunc.load_model(uri), uri))  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, File, Form, HTTPException, Path as PathParam, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from soundalike.config import Config
from soundalike.errors import AudioDecodeError, SoundalikeError
from soundalike.web.backends import BackendError, SearchBackend

STATIC_DIR = Path(__file__).with_name("static")

#: Room for multipart boundaries, part headers and the small form fields around the files.
FORM_OVERHEAD_BYTES = 64 * 1024
#: Largest start offset a request may name, seconds (a week): anything later is past the end of
#: any recording, and bounding it keeps inf and 1e308 out of the decoder.
MAX_OFFSET_S = 7 * 24 * 3600.0
#: Requests without a file (text queries) are small.
SMALL_BODY_BYTES = 64 * 1024


# --------------------------------------------------------------------------- response shapes


class Match(BaseModel):
    """One (query clip, catalogue clip) pair behind a song's score."""

    query_start_s: float = Field(description="start of the query clip in the uploaded audio, seconds")
    clip_start_s: float = Field(description="start of the catalogue clip in its track, seconds")
    clip_idx: int
    similarity: float = Field(description="cosine similarity of the two clips' vectors")
    distance: float = Field(description="cosine distance, 1 - similarity")


class LandmarkMatch(BaseModel):
    """A song's landmark (fingerprint) match with the query: where the query lies in that track."""

    offset_s: float = Field(description="where the query starts in that track, seconds")
    aligned_hits: int = Field(description="query landmarks that agree on that offset")
    query_hashes: int = Field(description="landmarks of the query")
    hit_ratio: float = Field(description="aligned_hits / query_hashes")
    peak_share: float = Field(description="share of all the track's landmark matches at that offset")
    speed: float = Field(description="speed factor of the query copy that matched (1.0: none)")
    confident: bool = Field(description="a time-consistent match that identifies the recording")


class Identified(LandmarkMatch):
    """The confident top match: the recording the query was cut from."""

    track_id: str


class Song(BaseModel):
    """One ranked catalogue song."""

    rank: int
    track_id: str
    path: str | None
    title: str | None
    tags: list[str]
    combined_score: float = Field(description="vote_weight * vote_score + (1 - vote_weight) * similarity_score")
    votes: int = Field(description="number of (query clip, catalogue clip) matches")
    total_similarity: float = Field(description="sum of the matches' cosine similarities")
    vote_score: float
    similarity_score: float
    evidence: list[Match]
    match: LandmarkMatch | None = Field(None, description="landmark match with the query; null when none "
                                                         "(absent for text queries and without a fingerprint index)")


class SearchResult(BaseModel):
    """The model's answer to one query, as ``soundalike query --json`` prints it."""

    results: list[Song]
    identified: Identified | None = Field(None, description="the confident top landmark match, or null")
    query_clips: int
    query_seconds: float
    query_text: str | None = None
    embedder: str
    clip_policy: str
    clip_s: float = Field(description="clip length, seconds: each match spans [start, start + clip_s)")
    timings_ms: dict[str, float]
    elapsed_ms: float = Field(description="wall time of the query in the web app, ms")


class TextQuery(BaseModel):
    """A description to search for (needs an embedder with a text tower, ``clap``)."""

    text: str = Field(min_length=1, examples=["calm solo piano"],
                      description="checked by the model like a served text query (length, text tower)")
    max_results: int | None = None
    top_k_per_chunk: int | None = None
    vote_weight: float | None = None


class CompareResult(BaseModel):
    """Frame-wise mel cosine similarity of two tracks (``soundalike compare --json``) and its plot."""

    mean_cosine: float
    frames: int
    offset_s: float = Field(description="B at t + offset_s matches A at t (with align)")
    frame_hop_s: float
    start_s: float = Field(description="time of the first compared frame in A's compared stretch, seconds")
    timeline: list[float] = Field(description="cosine similarity per compared frame")
    png_b64: str = Field(description="PNG: both spectrograms and the similarity curve, base64")


class Info(BaseModel):
    """What the page needs to know before the first query."""

    backend: str
    model: str
    embedder: str | None
    clip_s: float
    text_search: bool | None
    clip_audio: bool
    max_upload_bytes: int
    max_compare_seconds: float
    defaults: dict[str, Any]


class Error(BaseModel):
    detail: str


_ERRORS = {400: {"model": Error, "description": "bad input (not audio, bad parameter, ...)"},
           413: {"model": Error, "description": "upload larger than query.max_query_bytes"}}


# --------------------------------------------------------------------------- the app


def create_app(cfg: Config, backend: SearchBackend) -> FastAPI:
    """Build the web app over ``backend``.

    Parameters
    ----------
    cfg : Config
        ``query`` gives the upload limit and defaults, ``web`` the clip and compare settings.
    backend : SearchBackend
        Where queries go (:class:`~soundalike.web.backends.LocalBackend` or
        :class:`~soundalike.web.backends.RemoteBackend`).
    """
    from soundalike import __version__

    max_bytes = cfg.query.max_query_bytes
    # What a search leaves out runs with this app's query.* settings, as `soundalike query` does
    # with its own: sent with every request, so /api/info tells the truth for either backend
    # (the model's logged defaults are unknown behind a remote endpoint).
    defaults = {"max_results": cfg.query.max_results, "top_k_per_chunk": cfg.query.top_k_per_chunk,
                "vote_weight": cfg.query.vote_weight}
    app = FastAPI(
        title="soundalike",
        version=__version__,
        description="Find the catalogue songs that sound like an uploaded recording; compare two tracks.",
    )
    app.add_middleware(BodyLimit, limit_for=_body_limits(max_bytes))
    # Outside Starlette's own error middleware too, so that a 500 carries the headers as well.
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: SecurityHeaders(build())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(BackendError)
    def _backend_error(request, exc: BackendError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(SoundalikeError)
    def _soundalike_error(request, exc: SoundalikeError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/info", response_model=Info)
    def info() -> dict:
        b = backend.info
        return {
            "backend": b.kind, "model": b.model, "embedder": b.embedder, "clip_s": b.clip_s,
            "text_search": b.text_search, "clip_audio": b.clip_audio, "max_upload_bytes": max_bytes,
            "max_compare_seconds": cfg.web.max_compare_seconds,
            "defaults": dict(defaults),
        }

    @app.post("/api/search", response_model=SearchResult, responses=_ERRORS)
    def search(
        file: UploadFile = File(description="the query recording (wav, flac, ogg, opus, mp3, ...)"),
        max_results: int | None = Form(None),
        top_k_per_chunk: int | None = Form(None),
        vote_weight: float | None = Form(None),
        exclude_self: bool = Form(False, description="leave out the catalogue track with the same bytes"),
    ) -> dict:
        data = _read_upload(file, max_bytes)
        params = _params(defaults, max_results=max_results, top_k_per_chunk=top_k_per_chunk, vote_weight=vote_weight)
        if exclude_self:
            params["exclude_track_ids"] = [hashlib.sha256(data).hexdigest()]
        return _ask(backend, {"audio_b64": base64.b64encode(data).decode()}, params)

    @app.post("/api/search/text", response_model=SearchResult, responses=_ERRORS)
    def search_text(query: TextQuery) -> dict:
        params = _params(defaults, max_results=query.max_results, top_k_per_chunk=query.top_k_per_chunk,
                         vote_weight=query.vote_weight)
        return _ask(backend, {"text": query.text}, params)

    @app.post("/api/compare", response_model=CompareResult, responses=_ERRORS)
    def compare(
        a: UploadFile = File(description="track A"),
        b: UploadFile = File(description="track B"),
        seconds: float = Form(15.0, gt=0, le=cfg.web.max_compare_seconds,
                              description="compare at most this many seconds of each (a shorter track over its own length)"),
        start_a_s: float = Form(0.0, ge=0, le=MAX_OFFSET_S, description="where A's compared stretch starts, seconds"),
        start_b_s: float = Form(0.0, ge=0, le=MAX_OFFSET_S, description="where B's compared stretch starts, seconds"),
        align: bool = Form(True, description="find the offset of B that maximises similarity"),
    ) -> dict:
        from soundalike.compare import compare_files, plot_comparison

        data_a, data_b = _read_upload(a, max_bytes), _read_upload(b, max_bytes)
        for upload, data, start_s, field in ((a, data_a, start_a_s, "start_a_s"), (b, data_b, start_b_s, "start_b_s")):
            length_s = _check_audio(upload, data).duration_s
            if start_s >= length_s:
                raise AudioDecodeError(upload.filename or "the upload",
                                       f"{field}={start_s:g} s is past its end: it is {length_s:.2f} s long")
        result = compare_files(data_a, data_b, seconds=seconds, align=align, start_a_s=start_a_s, start_b_s=start_b_s)
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_comparison(result, Path(tmp) / "compare.png", label_a=a.filename or "A",
                                  label_b=b.filename or "B").read_bytes()
        return {**result.to_json(), "start_s": float(result.times_s[0]) if result.frames else 0.0,
                "png_b64": base64.b64encode(png).decode()}

    @app.get(
        "/api/clips/{track_id}/audio",
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}}, "description": "16-bit mono WAV of the clip"},
                   404: {"model": Error}, 501: {"model": Error}},
    )
    def clip_audio(
        track_id: str = PathParam(pattern=r"^[A-Za-z0-9_.:-]{1,128}$"),
        start_s: float = Query(0.0, ge=0, le=MAX_OFFSET_S, description="clip start in the track, seconds"),
        duration_s: float | None = Query(None, gt=0, description="at most the clip length (the default)"),
    ) -> Response:
        catalogue = backend.catalogue
        if catalogue is None:
            raise HTTPException(501, "catalogue clip audio needs the catalogue files on this machine; with a remote "
                                     "backend set web.tracks_file to the index's tracks.parquet")
        if track_id not in catalogue:
            raise HTTPException(404, f"no track {track_id} in the index")
        path = catalogue.path_of(track_id)
        if not path.is_file():
            raise HTTPException(404, f"the catalogue file of track {track_id} is not readable on this machine")
        clip_s = backend.info.clip_s
        duration = clip_s if duration_s is None else min(duration_s, clip_s)
        wav = _wav_clip(path, cfg.web.clip_sample_rate_hz, start_s, duration)
        return Response(wav, media_type="audio/wav",
                        headers={"Cache-Control": "public, max-age=86400, immutable"})  # track ids are content hashes

    return app


# --------------------------------------------------------------------------- helpers


def _params(defaults: dict, **given) -> dict:
    """``defaults`` overridden by the parameters the user set; the model checks them all."""
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def _ask(backend: SearchBackend, record: dict, params: dict) -> dict:
    started = time.perf_counter()
    answer = backend.predict([record], params)[0]
    return {**answer, "clip_s": backend.info.clip_s, "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)}


def _read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The upload's bytes, refused when empty or larger than ``max_bytes``."""
    data = upload.file.read(max_bytes + 1)
    name = upload.filename or "the upload"
    if len(data) > max_bytes:
        raise HTTPException(413, f"{name} is larger than query.max_query_bytes={max_bytes}")
    if not data:
        raise AudioDecodeError(name, "the file is empty")
    return data


def _check_audio(upload: UploadFile, data: bytes):
    """Read the upload's header (its :class:`~soundalike.audio.AudioInfo`), so that a bad file is
    named in the error (not ``<n bytes>``)."""
    from soundalike.audio import probe_audio

    try:
        return probe_audio(data)
    except AudioDecodeError as exc:
        raise AudioDecodeError(upload.filename or "the upload", exc.reason) from None


def _wav_clip(path: Path, sr: int, start_s: float, duration_s: float) -> bytes:
    """``duration_s`` of ``path`` from ``start_s``, mono 16-bit WAV at ``sr``."""
    import soundfile as sf

    from soundalike.audio import load_audio

    wave = load_audio(path, sr, offset_s=start_s, duration_s=duration_s)
    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _body_limits(max_bytes: int) -> Callable[[str, str], tuple[int, str]]:
    """``limit_for(method, path) -> (bytes, what sets it)`` for :class:`BodyLimit`."""
    def limit_for(method: str, path: str) -> tuple[int, str]:
        if method == "POST" and path == "/api/search":
            return max_bytes + FORM_OVERHEAD_BYTES, f"query.max_query_bytes={max_bytes} per file, plus the form"
        if method == "POST" and path == "/api/compare":
            return 2 * max_bytes + FORM_OVERHEAD_BYTES, f"query.max_query_bytes={max_bytes} per file, plus the form"
        return SMALL_BODY_BYTES, f"{SMALL_BODY_BYTES // 1024} KiB for requests without a file"

    return limit_for


class _TooLarge(HTTPException):
    """Raised from inside body parsing; FastAPI passes HTTPExceptions through as they are."""

    def __init__(self, limit: int, why: str):
        super().__init__(413, f"request body larger than {limit} bytes ({why})")


class BodyLimit:
    """ASGI middleware refusing request bodies over a per-route limit with 413.

    A declared ``Content-Length`` over the limit is refused before any of the body is read; a
    body without one (chunked) is counted as it arrives and refused as soon as it passes the
    limit, so an oversized upload is never read whole.
    """

    def __init__(self, app, limit_for: Callable[[str, str], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, why = self.limit_for(scope["method"], scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _send_json(send, 413, _TooLarge(limit, why).detail)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit, why)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge as exc:  # raised outside a route's exception handling
            if started:
                raise
            await _send_json(send, 413, exc.detail)


#: Sent with every response: no MIME sniffing (an upload echoed back is never run as a script),
#: and the page may not be framed by another site (clickjacking).
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", b"frame-ancestors 'none'"))


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response (413s from
    :class:`BodyLimit` included, as it runs inside this one)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
