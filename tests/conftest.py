"""Shared fixtures: real audio bytes written to disk, made in the test."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def melody(sr: int, seconds: float, seed: int = 0, *, note_s: float = 0.25) -> np.ndarray:
    """A deterministic plucked melody with harmonics: float32 [n] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n, dtype=np.float64)
    note_n = int(note_s * sr)
    t = np.arange(note_n) / sr
    envelope = np.exp(-t * 6.0)
    for i, start in enumerate(range(0, n, note_n)):
        freq = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6)) * envelope
        piece = tone[: n - start]
        out[start : start + piece.shape[0]] += piece
    out += 0.02 * rng.standard_normal(n)
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


@pytest.fixture
def write_audio(tmp_path):
    """write_audio(name, wave [n] or [n, ch], sr, **soundfile kwargs) -> path."""

    def _write(name: str, wave: np.ndarray, sr: int, **kwargs):
        path = tmp_path / name
        sf.write(path, wave, sr, **kwargs)
        return path

    return _write


LOCAL_CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH (scripts/bootstrap.sh installs it)")



def register_search_model(tracks: list[dict], cfg, index_dir) -> str:
    """Index ``tracks`` without Spark and register them as ``<mlflow.model_name>@champion``.

    The same artifacts the pipeline's index and register stages produce (FAISS index, id map,
    ``tracks.parquet``, the config, the ``soundalike_search`` pyfunc in the profile's registry),
    built from ``extract_track`` vectors, so tests of the model's callers need no Spark.

    Parameters
    ----------
    tracks : list of dict
        ``{"path", "title", "tags"}`` per catalogue file; the track id is the file's SHA-256.
    cfg : Config
    index_dir : path
        Where the index is written before it is logged.

    Returns
    -------
    str
        The model URI, ``models:/<name>@champion``.
    """
    import mlflow
    import pandas as pd

    from soundalike.checksums import sha256_file
    from soundalike.embedders import create_embedder
    from soundalike.extract import extract_track
    from soundalike.index import build_index
    from soundalike.mlflow_model import configure_mlflow, log_search_model
    from soundalike.search import TRACKS_FILE

    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    vectors, tids, idx, starts, rows = [], [], [], [], []
    for track in tracks:
        track_id = sha256_file(track["path"])
        clips = extract_track(track["path"], embedder, cfg.clips, batch_size=cfg.embedder.batch_size)
        keep = clips.indexable
        vectors.append(clips.vectors[keep])
        tids += [track_id] * int(keep.sum())
        idx += list(np.flatnonzero(keep))
        starts += list(clips.start_s[keep])
        rows.append({"track_id": track_id, "path": str(track["path"]), "title": track["title"],
                     "tags": list(track["tags"])})
    index = build_index(np.concatenate(vectors), np.array(tids, dtype=object), np.array(idx), np.array(starts),
                        embedder=embedder.key, params=cfg.index)
    index.save(index_dir)
    pd.DataFrame(rows).to_parquet(Path(index_dir) / TRACKS_FILE, index=False)

    example = io.BytesIO()
    sf.write(example, melody(8000, 6.0), 8000, format="WAV", subtype="PCM_16")
    experiment_id = configure_mlflow(cfg)
    name = cfg.mlflow.model_name
    with mlflow.start_run(experiment_id=experiment_id, run_name="index"):
        info = log_search_model(index_dir, cfg, example_audio=example.getvalue(), registered_model_name=name)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", str(info.registered_model_version))
    return f"models:/{name}@champion"


@pytest.fixture(scope="session")
def registered_search_model(tmp_path_factory):
    """An 8-track sample catalogue (mel embedder) registered by :func:`register_search_model`.

    Returns a namespace: ``cfg``, ``overrides`` (``--set`` values), ``root`` (catalogue dir),
    ``meta`` (its tracks), ``uri`` and ``model`` (loaded with ``mlflow.pyfunc.load_model``).
    """
    import types

    mlflow = pytest.importorskip("mlflow")

    from soundalike.config import load_config
    from soundalike.sample import generate_catalogue, load_metadata

    root = tmp_path_factory.mktemp("model_cat")
    work = tmp_path_factory.mktemp("model_work")
    generate_catalogue(root, n_tracks=8, seed=5, min_duration_s=30.0, max_duration_s=45.0, progress=False)
    overrides = [f"workdir={work}", f"catalogue.path={root}", "embedder.device=cpu"]
    cfg = load_config(LOCAL_CONF, overrides)
    meta = load_metadata(root)
    tracks = [{"path": root / t.file, "title": t.title, "tags": t.tags} for t in meta]
    uri = register_search_model(tracks, cfg, work / "index")
    return types.SimpleNamespace(cfg=cfg, overrides=overrides, root=root, meta=meta, uri=uri,
                                 model=mlflow.pyfunc.load_model(uri))


@pytest.fixture(scope="session")
def fingerprinted_search_model(registered_search_model, tmp_path_factory):
    """The registered sample catalogue's index with its landmark fingerprint index beside it.

    The pipeline's index stage writes both; ``register_search_model`` writes only the clip
    index. Logged (not registered) as its own pyfunc; a namespace like
    ``registered_search_model``'s, with this model's ``uri`` and ``model``.
    """
    import types

    import mlflow

    from soundalike.checksums import sha256_file
    from soundalike.fingerprint import build_fingerprint_index
    from soundalike.mlflow_model import configure_mlflow, log_search_model

    m = registered_search_model
    index_dir = tmp_path_factory.mktemp("fp_index") / "index"
    shutil.copytree(Path(m.cfg.workdir) / "index", index_dir)
    sources = {sha256_file(m.root / t.file): m.root / t.file for t in m.meta}
    build_fingerprint_index(sources, m.cfg.fingerprint).save(index_dir)
    example = io.BytesIO()
    sf.write(example, melody(8000, 6.0), 8000, format="WAV", subtype="PCM_16")
    experiment_id = configure_mlflow(m.cfg)
    with mlflow.start_run(experiment_id=experiment_id, run_name="index+fingerprints"):
        info = log_search_model(index_dir, m.cfg, example_audio=example.getvalue(), registered_model_name=None)
    return types.SimpleNamespace(**{**vars(m), "uri": info.model_uri, "model": mlflow.pyfunc.load_model(info.model_uri)})
