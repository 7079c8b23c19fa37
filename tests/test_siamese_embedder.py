"""The ``siamese`` embedder: a saved training branch, used through the registry like any embedder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import melody
from soundalike.config import ClipsConfig, EmbedderConfig
from soundalike.embedders import available_embedders, create_embedder
from soundalike.errors import ConfigError, ModelWeightsError
from soundalike.extract import extract_track
from soundalike.training.model import (
    CnnParams,
    ConvBranch,
    FrontendParams,
    HeadParams,
    ProjectionHead,
    branch_spec,
    save_branch,
)

CLIPS = ClipsConfig(clip_s=2.0, hop_s=2.0, min_tail_s=1.0)


def _save_cnn(directory, *, seed: int = 0):
    torch.manual_seed(seed)
    cnn = CnnParams(channels=(4, 8), dim=12)
    branch = ConvBranch(cnn).eval()
    return save_branch(branch, branch_spec(kind="cnn", clip_s=2.0, cnn=cnn, frontend=FrontendParams()), directory)


def _siamese(directory, clip_s: float = 2.0):
    return create_embedder(EmbedderConfig(name="siamese", weights_path=str(directory), device="cpu"), clip_s=clip_s)


def test_cnn_branch_embeds_a_track_through_the_registry_and_extract_track(tmp_path, write_audio):
    sha = _save_cnn(tmp_path / "model")
    assert "siamese" in available_embedders()
    emb = _siamese(tmp_path / "model")
    path = write_audio("song.flac", melody(44100, 7.0, seed=2), 44100)

    clips = extract_track(path, emb, CLIPS)

    assert emb.sample_rate_hz == 16000 and emb.dim == 12
    assert emb.key.startswith("siamese@1-" + sha[:12])
    assert len(clips) == 4 and clips.vectors.shape == (4, 12)
    assert np.allclose(np.linalg.norm(clips.vectors, axis=1), 1.0, atol=1e-5)
    again = extract_track(path, _siamese(tmp_path / "model"), CLIPS)
    assert np.array_equal(clips.vectors, again.vectors)  # a reloaded model gives the same vectors


def test_version_changes_with_the_weights_and_the_clip_length(tmp_path):
    _save_cnn(tmp_path / "a", seed=0)
    _save_cnn(tmp_path / "b", seed=1)
    a = _siamese(tmp_path / "a")
    assert a.version != _siamese(tmp_path / "b").version
    assert a.version != _siamese(tmp_path / "a", clip_s=3.0).version
    assert a.version == _siamese(tmp_path / "a" / "siamese.safetensors").version  # the file names its directory


def test_head_branch_runs_over_its_frozen_base_embedder(tmp_path, write_audio):
    base = create_embedder(EmbedderConfig(name="mel", device="cpu"), clip_s=2.0)
    head = ProjectionHead(HeadParams(dim=base.dim, hidden=16)).eval()  # untrained: the base's vectors
    save_branch(head, branch_spec(kind="head", clip_s=2.0, head=HeadParams(dim=base.dim, hidden=16),
                                  base_embedder={"name": "mel", "options": {}}), tmp_path)
    emb = _siamese(tmp_path)
    path = write_audio("song.wav", melody(22050, 5.0, seed=4), 22050)

    learned, mel = extract_track(path, emb, CLIPS), extract_track(path, base, CLIPS)

    assert emb.sample_rate_hz == base.sample_rate_hz and emb.dim == base.dim
    assert emb.base.key == base.key
    assert np.allclose(learned.vectors, mel.vectors, atol=1e-5)


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(ModelWeightsError, match="embedder.weights_path"):
        create_embedder(EmbedderConfig(name="siamese"), clip_s=10.0)
    with pytest.raises(ModelWeightsError, match="siamese.json, siamese.safetensors missing.*soundalike train"):
        _siamese(tmp_path / "nothing_here")
    _save_cnn(tmp_path / "m")
    with pytest.raises(ConfigError, match="no embedder.options"):
        create_embedder(EmbedderConfig(name="siamese", weights_path=str(tmp_path / "m"), options={"layer": 3}),
                        clip_s=2.0)


def test_a_missing_base_model_is_named_with_the_path_looked_for(tmp_path, monkeypatch):
    head = HeadParams(dim=32, hidden=16)
    spec = branch_spec(kind="head", clip_s=2.0, head=head,
                       base_embedder={"name": "wav2vec2", "options": {}, "weights_path": "models/w2v"})
    save_branch(ProjectionHead(head).eval(), spec, tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelWeightsError) as err:
        _siamese(tmp_path / "m")
    message = str(err.value)
    assert str(tmp_path / "m" / "siamese.json") in message and "base embedder wav2vec2" in message
    assert f"'models/w2v', looked for as {tmp_path / 'models' / 'w2v'}" in message
