"""Text → audio search: ``Searcher.search_text``, the pyfunc's ``text`` rows and ``query --text``.

The CLAP model is a tiny randomly initialised transformers ``ClapModel`` with a tiny byte-level
RoBERTa tokenizer, both saved to disk and loaded through ``create_embedder``; the catalogue is
three generated tracks indexed in memory from ``extract_track`` vectors.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from soundalike.cli import main
from soundalike.config import ClipsConfig, Config, EmbedderConfig, QueryConfig, config_to_dict
from soundalike.embedders import create_embedder
from soundalike.errors import ModelWeightsError, ParameterError
from soundalike.index import build_index
from soundalike.search import TRACKS_FILE, Searcher
from test_clap import clap_embedder, save_tiny_transformers_clap, searcher_over, tiny_catalogue


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("textsearch")
    weights = save_tiny_transformers_clap(root / "clap")
    embedder = clap_embedder(weights)
    paths = tiny_catalogue(root / "cat")
    return weights, paths, searcher_over(paths, embedder)


def test_text_query_ranks_songs_by_their_clips_similarity_to_the_text(catalogue):
    _, paths, searcher = catalogue
    out = searcher.search_text("calm solo piano", max_results=3, top_k_per_chunk=6, vote_weight=0.2)
    assert out["query_text"] == "calm solo piano" and out["query_clips"] == 1
    assert out["embedder"] == searcher.embedder.key
    results = out["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    # All six clips are neighbours (two per track), so votes tie and the summed similarity ranks.
    text = searcher.embedder.embed_text(["calm solo piano"])[0]
    sims = searcher.index.index.reconstruct_n(0, len(searcher.index)) @ text
    totals = {t: sims[searcher.index.track_ids == t].sum() for t in ("t0", "t1", "t2")}
    assert [r["track_id"] for r in results] == sorted(totals, key=totals.get, reverse=True)
    for r in results:
        assert r["votes"] == 2 and r["total_similarity"] == pytest.approx(totals[r["track_id"]], abs=1e-4)
        assert r["path"] == str(paths[int(r["track_id"][1])])
        assert all(m["query_start_s"] == 0.0 for m in r["evidence"])
    assert results[0]["combined_score"] == pytest.approx(1.0)
    again = searcher.search_text("calm solo piano", max_results=3, top_k_per_chunk=6)
    assert [r["track_id"] for r in again["results"]] == [r["track_id"] for r in results]


def test_text_query_honours_exclusions_and_max_results(catalogue):
    _, _, searcher = catalogue
    out = searcher.search_text("drum and bass", max_results=1, top_k_per_chunk=6, exclude_track_ids=["t0"])
    assert len(out["results"]) == 1 and out["results"][0]["track_id"] != "t0"


def test_empty_overlong_or_non_string_text_is_refused(catalogue):
    _, _, searcher = catalogue
    for bad in ("", "   ", "x" * 1001, None):
        with pytest.raises(ParameterError, match="text must"):
            searcher.search_text(bad)


def test_embedder_without_text_tower_cannot_search_by_text(catalogue):
    _, _, searcher = catalogue
    mel = create_embedder(EmbedderConfig(name="mel", device="cpu"), clip_s=10.0)
    vectors = np.random.default_rng(0).standard_normal((4, mel.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, np.array(["a", "a", "b", "b"], dtype=object), np.array([0, 1, 0, 1]),
                        np.array([0.0, 10.0, 0.0, 10.0]), embedder=mel.key)
    tracks = pd.DataFrame({"track_id": ["a", "b"], "path": ["a.wav", "b.wav"], "title": ["A", "B"], "tags": [[], []]})
    with pytest.raises(ParameterError, match="no text tower.*embedder.name=clap"):
        Searcher(mel, index, tracks, ClipsConfig(), QueryConfig()).search_text("calm solo piano")


def test_checkpoint_without_tokenizer_says_which_files_are_missing(tmp_path):
    emb = clap_embedder(save_tiny_transformers_clap(tmp_path, tokenizer=False))
    with pytest.raises(ModelWeightsError, match=r"vocab\.json, merges\.txt missing"):
        emb.embed_text(["calm solo piano"])


@pytest.fixture(scope="module")
def pyfunc(catalogue, tmp_path_factory):
    """The soundalike_search pyfunc, loaded from an index directory and config as MLflow would."""
    pytest.importorskip("mlflow")
    from soundalike.mlflow_model import SoundalikeSearchModel

    weights, paths, searcher = catalogue
    root = tmp_path_factory.mktemp("pyfunc")
    index_dir = searcher.index.save(root / "index")
    searcher.tracks.reset_index(drop=True).to_parquet(index_dir / TRACKS_FILE, index=False)
    cfg = Config(embedder=EmbedderConfig(name="clap", device="cpu", batch_size=4, weights_path=str(weights)))
    (root / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    context = SimpleNamespace(artifacts={"index": str(index_dir), "config": str(root / "config.json")}, model_config={})
    model = SoundalikeSearchModel()
    model.load_context(context)
    return model, context, paths


def test_pyfunc_answers_text_rows_and_audio_rows_in_one_request(pyfunc):
    model, context, paths = pyfunc
    audio = base64.b64encode(paths[2].read_bytes()).decode()
    frame = pd.DataFrame([{"text": "calm solo piano"}, {"audio_b64": audio}])
    text_out, audio_out = model.predict(context, frame, params={"max_results": 2, "top_k_per_chunk": 1})
    assert text_out["query_text"] == "calm solo piano" and len(text_out["results"]) == 1
    assert audio_out["results"][0]["track_id"] == "t2"


def test_pyfunc_refuses_a_row_with_both_text_and_audio(pyfunc):
    from mlflow.exceptions import MlflowException

    model, context, paths = pyfunc
    audio = base64.b64encode(paths[0].read_bytes()).decode()
    with pytest.raises(MlflowException, match="one of audio_b64, path or text"):
        model.predict(context, pd.DataFrame({"text": ["piano"], "audio_b64": [audio]}))
    with pytest.raises(MlflowException, match="text must be a string"):
        model.predict(context, pd.DataFrame({"text": [3]}))


def test_cli_query_needs_exactly_one_of_file_or_text(capsys, tmp_path):
    assert main(["query", "--text", "calm solo piano", str(tmp_path / "x.wav")]) == 2
    assert "exactly one of FILE" in capsys.readouterr().err
    assert main(["query"]) == 2
    assert "exactly one of FILE" in capsys.readouterr().err
    assert main(["query", "--text", "piano", "--exclude-self"]) == 2
    assert "--exclude-self needs a query FILE" in capsys.readouterr().err
