"""The Spark pipeline and the registered query model with the learned embedders.

Tiny randomly initialised models of the real architectures -- a LAION CLAP checkpoint given as a
*file* (HTSAT-tiny + one-layer RoBERTa) and a transformers Wav2Vec2 directory -- go through
ingest → embed (Spark, the embedder built on the worker) → index → evaluate → register. Then the
original weights are moved away and the registered pyfunc still answers: the weights travel
inside the model as an artifact, as a serving endpoint (which cannot read a UC Volume) needs.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("pyspark")
mlflow = pytest.importorskip("mlflow")

from soundalike.config import load_config  # noqa: E402
from soundalike.embedders.clap import LAION_CHECKPOINT  # noqa: E402
from soundalike.mlflow_model import configure_mlflow  # noqa: E402
from soundalike.sample import generate_catalogue, load_metadata  # noqa: E402
from soundalike_pipelines.runner import run_pipeline  # noqa: E402
from test_clap import save_tiny_laion_checkpoint  # noqa: E402
from test_wav2vec2 import save_tiny_wav2vec2  # noqa: E402

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"


@pytest.mark.parametrize("which", ["clap-laion-file", "wav2vec2"])
def test_pipeline_and_registered_model_run_with_a_learned_embedder(which, tmp_path):
    weights = tmp_path / "weights"
    if which == "clap-laion-file":
        save_tiny_laion_checkpoint(weights)
        embedder = ["embedder.name=clap", f"embedder.weights_path={weights / LAION_CHECKPOINT}",
                    "embedder.options={amodel: HTSAT-tiny}"]
    else:
        save_tiny_wav2vec2(weights)
        embedder = ["embedder.name=wav2vec2", f"embedder.weights_path={weights}", "embedder.options={layer: 2}"]
    root = tmp_path / "catalogue"
    generate_catalogue(root, n_tracks=4, seed=11, min_duration_s=20.0, max_duration_s=30.0, progress=False)
    cfg = load_config(CONF, [
        f"workdir={tmp_path / 'work'}", f"catalogue.path={root}", f"tables.schema=learned_{which.replace('-', '_')}",
        "spark.master=local[2]", "embedder.batch_size=4", "evaluation.n_excerpts=4", *embedder,
    ])
    summary = run_pipeline(cfg)
    assert summary["embed"]["tracks"] == 4 and summary["embed"]["errors"] == 0
    assert summary["index"]["vectors"] > 0 and summary["register"]["version"] == "1"

    configure_mlflow(cfg)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(cfg.mlflow.model_name, "champion")
    logged = {a.path for a in client.list_artifacts(version.run_id, "model/artifacts")}
    assert "model/artifacts/weights" in logged

    shutil.move(weights, tmp_path / "gone")  # the batch job's copy is no longer there
    model = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.model_name}@champion")
    track = load_metadata(root)[2]
    audio = (root / track.file).read_bytes()
    out = model.predict(pd.DataFrame({"audio_b64": [base64.b64encode(audio).decode()]}), params={"max_results": 3})
    results = out[0]["results"]
    # A random tiny model ranks poorly, but the query's own clips must come back with the
    # catalogue's vectors exactly: the served model embeds with the very weights the job used.
    own = [r for r in results if r["track_id"] == hashlib.sha256(audio).hexdigest()]
    assert own, "the query track itself is not among the results"
    assert max(m["similarity"] for m in own[0]["evidence"]) > 0.999
    assert out[0]["embedder"].startswith(cfg.embedder.name + "@")
