"""Serve the registered query model locally with MLflow's own scoring server.

:func:`local_server` starts ``mlflow models serve`` on ``models:/<mlflow.model_name>@champion``
(what Databricks Model Serving runs, minus the cluster) and waits until it answers ``/ping``.
``soundalike serve`` runs it in the foreground; tests and ``benchmarks/serving_concurrency.py``
use it as a context manager.

Examples
--------
>>> with local_server(cfg, port=5001) as server:  # doctest: +SKIP
...     requests.post(f"{server.url}/invocations", json={"dataframe_records": [{"audio_b64": ...}]})
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from soundalike.config import Config
from soundalike.errors import ModelWeightsError, SoundalikeError


@dataclasses.dataclass(frozen=True)
class LocalServer:
    """A running scoring server: its base URL and the pid of its process group's leader."""

    url: str
    pid: int

    def rss_bytes(self) -> int:
        """Resident memory of the server and its worker processes, bytes (Linux /proc)."""
        total = 0
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
                if os.getpgid(int(status.parent.name)) != self.pid:
                    continue
            except (OSError, ValueError):
                continue
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_model_uri(uri: str) -> None:
    """Make sure ``uri`` names a model in the configured MLflow stores, before a server is started.

    Reads only the model's ``MLmodel`` file. Call :func:`~soundalike.mlflow_model.configure_mlflow`
    first.

    Raises
    ------
    ModelWeightsError
        No such registered model, alias (``@champion``), version, run or model directory.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.models.get_model_info(uri)
    except (MlflowException, OSError) as exc:
        first = (str(getattr(exc, "message", exc)).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelWeightsError(
            f"cannot serve model {uri}: {first[:300]} (run `soundalike pipeline` first, which registers the "
            "model and points its champion alias at it)"
        ) from None


def serve_command(cfg: Config, *, host: str, port: int, workers: int = 1, model_uri: str | None = None) -> list[str]:
    """The ``mlflow models serve`` command line for the champion model (or ``model_uri``)."""
    uri = model_uri or f"models:/{cfg.mlflow.model_name}@champion"
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
            "--host", host, "--port", str(port), "--workers", str(workers)]


def serve_env() -> dict[str, str]:
    """Environment for the server: the MLflow stores configured here, and this interpreter's
    ``bin`` first on PATH (``mlflow models serve`` execs ``uvicorn`` from it)."""
    import mlflow

    return dict(os.environ, MLFLOW_TRACKING_URI=mlflow.get_tracking_uri(), MLFLOW_REGISTRY_URI=mlflow.get_registry_uri(),
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@contextlib.contextmanager
def local_server(cfg: Config, *, port: int | None = None, host: str = "127.0.0.1", workers: int = 1,
                 model_uri: str | None = None, log_path: str | os.PathLike | None = None,
                 start_timeout_s: float = 180.0) -> Iterator["LocalServer"]:
    """Run the scoring server for the block; yields its :class:`LocalServer`. Stops it afterwards.

    Raises
    ------
    ModelWeightsError
        The model URI does not resolve (see :func:`check_model_uri`); no server is started.
    SoundalikeError
        The server exited or did not answer within ``start_timeout_s`` (its log is quoted).
    """
    from soundalike.mlflow_model import configure_mlflow

    configure_mlflow(cfg, read_only=True, model_uri=model_uri)
    check_model_uri(model_uri or f"models:/{cfg.mlflow.model_name}@champion")
    port = port or free_port()
    log = open(log_path, "w+") if log_path else subprocess.DEVNULL
    server = subprocess.Popen(serve_command(cfg, host=host, port=port, workers=workers, model_uri=model_uri),
                              env=serve_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    tail = Path(log_path).read_text()[-2000:] if log_path else "(no log kept)"
                    raise SoundalikeError(f"the scoring server did not start on {url}: {tail}") from None
                time.sleep(0.5)
        yield LocalServer(url, server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if log_path:
            log.close()
