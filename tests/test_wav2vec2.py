"""The ``wav2vec2`` embedder, on tiny randomly initialised Wav2Vec2 models saved with ``save_pretrained``.

The models are the real transformers architectures with small configs (32-wide, four layers);
the reference for every vector is transformers itself: ``Wav2Vec2FeatureExtractor`` then the
full ``Wav2Vec2Model`` with ``output_hidden_states``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from soundalike.config import EmbedderConfig
from soundalike.embedders import create_embedder
from soundalike.errors import ConfigError, ModelWeightsError
from soundalike.sample import STYLES, synthesize_track
from test_clap import searcher_over, tiny_catalogue

SR = 16000
CLIP_S = 10.0


def save_tiny_wav2vec2(directory: Path, *, seed: int = 0, stable_layer_norm: bool = False,
                       extractor: bool = True) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=stable_layer_norm, feat_extract_norm="layer" if stable_layer_norm else "group",
    )
    torch.manual_seed(seed)
    Wav2Vec2Model(config).save_pretrained(directory)
    if extractor:
        Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(directory)
    return directory


def w2v(path: Path, **options):
    cfg = EmbedderConfig(name="wav2vec2", device="cpu", batch_size=2, weights_path=str(path), options=options)
    return create_embedder(cfg, clip_s=CLIP_S)


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory) -> Path:
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("w2v"))


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    return np.stack([synthesize_track(STYLES[i], duration_s=CLIP_S, sample_rate_hz=SR, seed=i) for i in range(3)])


def _reference(directory: Path, clips: np.ndarray, layer: int) -> np.ndarray:
    """transformers' own path: extractor normalisation, full model, hidden_states[layer] averaged."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    inputs = Wav2Vec2FeatureExtractor.from_pretrained(str(directory))(list(clips), sampling_rate=SR, return_tensors="pt")
    model = Wav2Vec2Model.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        hidden = model(inputs["input_values"], output_hidden_states=True).hidden_states[layer]
    pooled = hidden.mean(dim=1).numpy()
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_clips_become_unit_vectors_of_hidden_size_deterministically(w2v_dir, clips):
    emb = w2v(w2v_dir)
    assert (emb.sample_rate_hz, emb.clip_samples, emb.dim, emb.layer) == (SR, 160000, 32, 2)
    batched = emb.embed(clips)  # batch_size 2: one batch of two, one of one
    assert batched.shape == (3, 32) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb.embed(clips), batched)
    single = np.concatenate([emb.embed(clips[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(single, batched, atol=1e-5)


@pytest.mark.parametrize("stable_layer_norm", [False, True])
@pytest.mark.parametrize("layer", [1, 2, 4])
def test_vector_is_the_mean_of_hidden_states_of_the_configured_layer(tmp_path, clips, layer, stable_layer_norm):
    directory = save_tiny_wav2vec2(tmp_path, stable_layer_norm=stable_layer_norm)
    emb = w2v(directory, layer=layer)
    np.testing.assert_allclose(emb.embed(clips), _reference(directory, clips, layer), atol=1e-4)


def test_without_preprocessor_config_the_extractor_defaults_apply(tmp_path, w2v_dir, clips):
    bare = w2v(save_tiny_wav2vec2(tmp_path, extractor=False))
    np.testing.assert_allclose(bare.embed(clips[:1]), w2v(w2v_dir).embed(clips[:1]), atol=1e-6)


def test_extract_track_and_searcher_find_the_query_track(w2v_dir, tmp_path):
    emb = w2v(w2v_dir)
    paths = tiny_catalogue(tmp_path / "cat")
    out = searcher_over(paths, emb).search(paths[2].read_bytes(), max_results=3, top_k_per_chunk=1)
    assert out["embedder"] == emb.key and out["query_clips"] == 2
    assert out["results"][0]["track_id"] == "t2" and out["results"][0]["combined_score"] == pytest.approx(1.0)


def test_version_changes_with_weights_and_layer(tmp_path, w2v_dir):
    base = w2v(w2v_dir)
    assert w2v(w2v_dir).version == base.version and base.key.startswith("wav2vec2@1-")
    assert w2v(w2v_dir, layer=3).version != base.version
    other = w2v(save_tiny_wav2vec2(tmp_path, seed=1))
    assert other.version.split("-")[1] != base.version.split("-")[1]


def test_missing_weights_name_the_files_and_where_to_put_them(tmp_path):
    for path in (None, str(tmp_path / "nowhere"), str(tmp_path)):
        with pytest.raises(ModelWeightsError) as err:
            create_embedder(EmbedderConfig(name="wav2vec2", device="cpu", weights_path=path), clip_s=CLIP_S)
        message = str(err.value)
        assert "config.json" in message and "model.safetensors" in message
        assert "facebook/wav2vec2-base" in message and "/Volumes/" in message and "embedder.weights_path" in message


def test_bad_options_are_config_errors(w2v_dir):
    with pytest.raises(ConfigError, match=r"layer must be an integer in \[1, 4\]"):
        w2v(w2v_dir, layer=5)
    with pytest.raises(ConfigError, match=r"layer must be an integer"):
        w2v(w2v_dir, layer="middle")
    with pytest.raises(ConfigError, match="unknown embedder.options for wav2vec2: pooling"):
        w2v(w2v_dir, pooling="max")
    with pytest.raises(ConfigError, match="precision"):
        w2v(w2v_dir, precision="int8")


def _damage(directory: Path, how: str) -> Path:
    weights = directory / "model.safetensors"
    if how == "truncated_safetensors":
        weights.write_bytes(weights.read_bytes()[:50_000])
    elif how == "empty_safetensors":
        weights.write_bytes(b"")
    else:  # a pytorch_model.bin in place of the safetensors file
        weights.unlink()
        (directory / "pytorch_model.bin").write_bytes({"garbage_bin": b"not a torch checkpoint\n" * 40,
                                                        "empty_bin": b"",
                                                        "damaged_zip_bin": b"PK\x03\x04" + b"\0" * 200}[how])
    return directory


@pytest.mark.parametrize("how, file, detail", [
    ("truncated_safetensors", "model.safetensors", "incomplete metadata"),
    ("empty_safetensors", "model.safetensors", "header too small"),
    ("garbage_bin", "pytorch_model.bin", "weights_only=True"),
    ("empty_bin", "pytorch_model.bin", "ends early"),
    ("damaged_zip_bin", "pytorch_model.bin", "zip archive"),
])
def test_damaged_weight_files_are_a_one_line_weights_error_naming_the_file(tmp_path, how, file, detail):
    directory = _damage(save_tiny_wav2vec2(tmp_path / how), how)
    with pytest.raises(ModelWeightsError) as err:
        w2v(directory)
    message = str(err.value)
    assert str(directory) in message and file in message and detail in message and "\n" not in message
    assert "weights_only=False" not in message  # never advise loading a user's pickle unsafely


def test_a_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    from test_clap import save_tiny_transformers_clap

    directory = save_tiny_transformers_clap(tmp_path / "clap")
    with pytest.raises(ModelWeightsError, match=r"config.json is a 'clap' model, not 'wav2vec2'"):
        w2v(directory)
