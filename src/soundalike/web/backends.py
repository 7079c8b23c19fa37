"""Where the web app's queries go: the registered pyfunc in this process, or a serving endpoint.

Both backends take the serving request shape (rows with ``audio_b64`` or ``text``, plus
``params``) and hand back the pyfunc's answer for each row, so the web app runs exactly the
validation and search code that Model Serving runs. Neither decodes or embeds anything itself.

A :class:`Catalogue` maps track ids to catalogue files for the clip-audio endpoint. It is built
from the index's ``tracks.parquet`` (the model's own artifact), never from a request.

Examples
--------
>>> backend = LocalBackend(mlflow.pyfunc.load_model(uri), uri)  # doctest: +SKIP
>>> backend.predict([{"audio_b64": b64}], {"max_results": 5})[0]["results"][0]["title"]  # doctest: +SKIP
'Neon Run'
>>> remote = RemoteBackend.from_env(cfg, os.environ)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import pandas as pd

from soundalike.config import Config
from soundalike.errors import ConfigError, SoundalikeError


class BackendError(SoundalikeError):
    """A query the backend refused or could not answer, with the HTTP status to answer with.

    Parameters
    ----------
    status : int
        400 (bad input), 413 (too large), 502 (the serving endpoint failed), ...
    message : str
        What went wrong, for the user.
    """

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


def status_for_bad_request(message: str) -> int:
    """HTTP status for the pyfunc's INVALID_PARAMETER_VALUE message: 413 for size, else 400."""
    return 413 if "max_query_bytes" in message else 400


@dataclass(frozen=True)
class BackendInfo:
    """What the front end needs to know about the model behind the app.

    Attributes
    ----------
    kind : str
        ``"local"`` or ``"remote"``.
    model : str
        The model URI, or the endpoint URL (never the token).
    embedder : str or None
        The index's embedder ``name@version``; ``None`` where unknown (remote).
    clip_s : float
        Clip length of the index, seconds: the span each match's players play.
    text_search : bool or None
        Whether the embedder has a text tower; ``None`` where unknown (remote: the endpoint
        answers 400 if not).
    clip_audio : bool
        Whether catalogue clip audio can be served here.
    """

    kind: str
    model: str
    embedder: str | None
    clip_s: float
    text_search: bool | None
    clip_audio: bool


class Catalogue:
    """Track id → catalogue file, from the index's track table.

    Parameters
    ----------
    tracks : pd.DataFrame
        At least ``track_id`` and ``path`` columns (``tracks.parquet`` of the index).
    """

    def __init__(self, tracks: pd.DataFrame):
        missing = {"track_id", "path"} - set(tracks.columns)
        if missing:
            raise ConfigError(f"the track table lacks column(s) {', '.join(sorted(missing))}")
        self._paths = {str(t): str(p) for t, p in zip(tracks["track_id"], tracks["path"]) if p}

    @classmethod
    def from_parquet(cls, path: str | Path) -> "Catalogue":
        """Read ``tracks.parquet`` (the index artifact), e.g. for a remote backend."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"web.tracks_file {path} does not exist; copy the index's tracks.parquet here or set it to null")
        return cls(pd.read_parquet(path, columns=["track_id", "path"]))

    def __contains__(self, track_id: str) -> bool:
        return track_id in self._paths

    def path_of(self, track_id: str) -> Path:
        """The file of ``track_id``.

        Raises
        ------
        KeyError
            The index holds no such track.
        """
        return Path(self._paths[track_id])


class SearchBackend(Protocol):
    """What the web app needs from a backend."""

    info: BackendInfo
    catalogue: Catalogue | None

    def predict(self, records: list[dict], params: dict[str, Any]) -> list[dict]:
        """Answer serving-shaped rows; raises :class:`BackendError`."""


class LocalBackend:
    """The registered pyfunc, loaded in this process (``mlflow.pyfunc.load_model``).

    Parameters
    ----------
    model : mlflow.pyfunc.PyFuncModel
        A loaded ``soundalike_search`` model.
    uri : str
        Where it was loaded from, for :attr:`info`.
    """

    def __init__(self, model, uri: str):
        python_model = model.unwrap_python_model()
        searcher = python_model.searcher
        self.model = model
        self.catalogue: Catalogue | None = Catalogue(searcher.tracks.reset_index(drop=True))
        self.info = BackendInfo(
            kind="local",
            model=uri,
            embedder=searcher.embedder.key,
            clip_s=float(python_model.cfg.clips.clip_s),
            text_search=callable(getattr(searcher.embedder, "embed_text", None)),
            clip_audio=True,
        )
        # One query at a time: the model runs one torch thread per worker, and the searcher's
        # embedder and index are not meant to be shared between threads.
        self._lock = threading.Lock()

    def predict(self, records: list[dict], params: dict[str, Any]) -> list[dict]:
        from mlflow.exceptions import MlflowException

        frame = pd.DataFrame.from_records(records)
        try:
            with self._lock:
                return list(self.model.predict(frame, params=params))
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            raise BackendError(status_for_bad_request(exc.message), exc.message) from None


class RemoteBackend:
    """A model-serving endpoint (``mlflow models serve`` or Databricks Model Serving).

    Parameters
    ----------
    url : str
        The endpoint's ``/invocations`` URL.
    token : str or None
        Bearer token (Databricks); ``None`` sends no ``Authorization`` header.
    clip_s : float
        Clip length of the served index (from the configuration the web app runs with).
    timeout_s : float
    catalogue : Catalogue or None
        Track files readable here; ``None``: no catalogue clip audio.
    """

    def __init__(self, url: str, token: str | None, *, clip_s: float, timeout_s: float = 120.0,
                 catalogue: Catalogue | None = None):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"serving endpoint URL must start with http:// or https://, got {url!r}")
        self.url = url
        self._token = token
        self.timeout_s = timeout_s
        self.catalogue = catalogue
        self.info = BackendInfo(kind="remote", model=url, embedder=None, clip_s=float(clip_s), text_search=None,
                                clip_audio=catalogue is not None)

    @classmethod
    def from_env(cls, cfg: Config, environ: Mapping[str, str]) -> "RemoteBackend":
        """Endpoint URL and token from the environment variables that ``cfg.web`` names.

        Raises
        ------
        ConfigError
            Neither the URL variable nor the host variable is set.
        """
        web = cfg.web
        url = environ.get(web.endpoint_url_env, "").strip()
        if not url:
            host = environ.get(web.host_env, "").strip().rstrip("/")
            if not host:
                raise ConfigError(
                    f"web.backend is remote but neither ${web.endpoint_url_env} (the endpoint's /invocations URL) "
                    f"nor ${web.host_env} (the workspace URL) is set"
                )
            if not host.startswith(("http://", "https://")):
                host = f"https://{host}"
            url = f"{host}/serving-endpoints/{web.endpoint_name}/invocations"
        token = environ.get(web.token_env, "").strip() or None
        catalogue = Catalogue.from_parquet(web.tracks_file) if web.tracks_file else None
        return cls(url, token, clip_s=cfg.clips.clip_s, timeout_s=web.request_timeout_s, catalogue=catalogue)

    def predict(self, records: list[dict], params: dict[str, Any]) -> list[dict]:
        body = json.dumps({"dataframe_records": records, "params": params}).encode()
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            message = _error_message(exc.read())
            if exc.code == 400:
                raise BackendError(status_for_bad_request(message), message) from None
            if exc.code == 413:
                raise BackendError(413, message) from None
            raise BackendError(502, f"the serving endpoint answered {exc.code}: {message}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(502, f"the serving endpoint {self.url} is unreachable: {reason}") from None
        except json.JSONDecodeError:
            raise BackendError(502, "the serving endpoint answered with something that is not JSON") from None
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(records):
            raise BackendError(502, "the serving endpoint's answer holds no predictions for the query")
        return predictions


#: MLflow's scoring server prefixes a refusal from predict with the whole input (the user's base64):
#: ``Failed to predict data '<DataFrame>'. \nError: <the model's message>``.
_MLFLOW_PREDICT_PREFIX = "Failed to predict data "
_MLFLOW_ERROR_MARK = "\nError: "


def _error_message(body: bytes) -> str:
    """The model's own message in a serving error body (as the local backend gives it), or the body's start."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body[:500].decode("utf-8", "replace").strip() or "no message"
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        message = payload["message"]
        if message.startswith(_MLFLOW_PREDICT_PREFIX) and _MLFLOW_ERROR_MARK in message:
            # The model's messages hold no newline, so the last mark starts the model's own words.
            message = message.rpartition(_MLFLOW_ERROR_MARK)[2]
        elif message.startswith(_MLFLOW_PREDICT_PREFIX):
            message = "the serving endpoint could not answer the query"
        return message[:2000]
    return json.dumps(payload)[:500]
