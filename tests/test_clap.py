"""The ``clap`` embedder, on tiny randomly initialised CLAP models saved in the real formats.

Nothing is downloaded: each test builds the real architectures with small configs (laion-clap's
HTSAT-tiny with a one-layer RoBERTa; a transformers ``ClapModel`` with a two-stage Swin audio
tower), saves them the way the published checkpoints are stored (a LAION ``.pt`` with a
``state_dict``; a ``save_pretrained`` directory) and loads them through ``create_embedder``.
The helpers here are also used by ``test_text_search.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from soundalike.config import ClipsConfig, EmbedderConfig, QueryConfig
from soundalike.embedders import create_embedder
from soundalike.embedders.clap import LAION_CHECKPOINT, ClapEmbedder, build_laion_model
from soundalike.errors import ConfigError, ModelWeightsError, ParameterError
from soundalike.extract import extract_track
from soundalike.index import build_index
from soundalike.sample import STYLES, synthesize_track
from soundalike.search import Searcher

SR = 48000
CLIP_S = 10.0
CLIP_N = int(SR * CLIP_S)


# --------------------------------------------------------------------------- tiny checkpoints


def _byte_level_alphabet() -> list[str]:
    """GPT-2/RoBERTa's byte → printable character map, as an ordered list of 256 characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


#: A few merges so that common words become single tokens.
_MERGES = [("Ġ", "p"), ("i", "a"), ("n", "o"), ("Ġp", "ia"), ("Ġpia", "no"), ("Ġ", "d"), ("r", "u")]


def tiny_vocab() -> dict[str, int]:
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token in _byte_level_alphabet() + ["".join(m) for m in _MERGES] + ["<mask>"]:
        vocab.setdefault(token, len(vocab))
    return vocab


def write_roberta_text_files(directory: Path, *, tokenizer: bool = True) -> Path:
    """RoBERTa's layout (``config.json``, ``vocab.json``, ``merges.txt``) with a tiny vocabulary."""
    from transformers import RobertaConfig

    directory.mkdir(parents=True, exist_ok=True)
    RobertaConfig(
        vocab_size=len(tiny_vocab()), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
        intermediate_size=64, max_position_embeddings=80, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    ).save_pretrained(directory)
    if tokenizer:
        (directory / "vocab.json").write_text(json.dumps(tiny_vocab()))
        (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES))
    return directory


def save_tiny_laion_checkpoint(directory: Path, *, seed: int = 0, tokenizer: bool = True) -> Path:
    """A LAION checkpoint (HTSAT-tiny audio, one-layer RoBERTa) as ``<dir>/<LAION_CHECKPOINT>``."""
    from transformers import RobertaConfig

    text_dir = write_roberta_text_files(directory / "roberta-base", tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = build_laion_model("HTSAT-tiny", RobertaConfig.from_pretrained(str(text_dir)))
    # As LAION's training script saves it: DistributedDataParallel names, beside the epoch.
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 15, "name": "tiny", "state_dict": state}, directory / LAION_CHECKPOINT)
    return directory


def save_tiny_transformers_clap(directory: Path, *, seed: int = 0, tokenizer: bool = True) -> Path:
    """A transformers CLAP directory: ``ClapModel`` + ``ClapFeatureExtractor`` (+ tokenizer)."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizer

    audio = dict(window_size=8, num_mel_bins=64, spec_size=256, patch_size=4, patch_stride=[4, 4], depths=[1, 1],
                 num_attention_heads=[2, 2], hidden_size=32, patch_embeds_hidden_size=16, projection_dim=24,
                 enable_fusion=False, num_classes=10)
    text = dict(vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=70, projection_dim=24)
    torch.manual_seed(seed)
    ClapModel(ClapConfig(audio_config=audio, text_config=text, projection_dim=24)).save_pretrained(directory)
    ClapFeatureExtractor().save_pretrained(directory)
    if tokenizer:
        RobertaTokenizer(vocab=tiny_vocab(), merges=list(_MERGES), model_max_length=64).save_pretrained(directory)
    return directory


def clap_embedder(path: Path, **options) -> ClapEmbedder:
    cfg = EmbedderConfig(name="clap", device="cpu", batch_size=4, weights_path=str(path), options=options)
    return create_embedder(cfg, clip_s=CLIP_S)


def styled_clips(n: int, seed: int = 0) -> np.ndarray:
    """``n`` different 10 s clips at 48 kHz: float32 [n, 480000]."""
    return np.stack([synthesize_track(STYLES[i % len(STYLES)], duration_s=CLIP_S, sample_rate_hz=SR, seed=seed + i)
                     for i in range(n)])


def tiny_catalogue(root: Path, n: int = 3, seconds: float = 15.0) -> list[Path]:
    """``n`` generated tracks of different styles, written as 44.1 kHz wav files."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"track_{i}_{STYLES[i]}.wav"
        sf.write(path, synthesize_track(STYLES[i], duration_s=seconds, sample_rate_hz=44100, seed=10 + i), 44100)
        paths.append(path)
    return paths


def searcher_over(paths: list[Path], embedder, clips_cfg: ClipsConfig = ClipsConfig()) -> Searcher:
    """A :class:`Searcher` over an in-memory index of ``paths``, embedded with ``extract_track``."""
    vectors, tids, idx, starts, rows = [], [], [], [], []
    for i, path in enumerate(paths):
        clips = extract_track(path, embedder, clips_cfg, batch_size=3)
        vectors.append(clips.vectors)
        tids += [f"t{i}"] * len(clips)
        idx += list(range(len(clips)))
        starts += list(clips.start_s)
        rows.append({"track_id": f"t{i}", "path": str(path), "title": path.stem, "tags": [STYLES[i]]})
    index = build_index(np.concatenate(vectors), np.array(tids, dtype=object), np.array(idx), np.array(starts),
                        embedder=embedder.key)
    return Searcher(embedder, index, pd.DataFrame(rows), clips_cfg, QueryConfig(), batch_size=3)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def laion_dir(tmp_path_factory) -> Path:
    return save_tiny_laion_checkpoint(tmp_path_factory.mktemp("laion"))


@pytest.fixture(scope="module")
def laion(laion_dir) -> ClapEmbedder:
    return clap_embedder(laion_dir, amodel="HTSAT-tiny")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return save_tiny_transformers_clap(tmp_path_factory.mktemp("hfclap"))


@pytest.fixture(scope="module")
def hf(hf_dir) -> ClapEmbedder:
    return clap_embedder(hf_dir)


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    return styled_clips(3)


# --------------------------------------------------------------------------- both formats


@pytest.mark.parametrize("which", ["laion", "hf"])
def test_clips_become_unit_vectors_deterministically_and_batch_equals_single(which, request, clips):
    emb = request.getfixturevalue(which)
    assert (emb.sample_rate_hz, emb.clip_s, emb.clip_samples) == (SR, CLIP_S, CLIP_N)
    batched = emb.embed(clips)
    assert batched.shape == (3, emb.dim) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb.embed(clips), batched)  # no random crop, no dropout
    single = np.concatenate([emb.embed(clips[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(single, batched, atol=2e-5)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_auto_detects_the_format_and_reports_it_in_the_key(laion, hf, laion_dir):
    assert (laion.format, laion.dim) == ("laion", 512)
    assert (hf.format, hf.dim) == ("transformers", 24)
    assert laion.key.startswith("clap@1-") and laion.key != hf.key
    # The version carries the checkpoint file's own SHA-256 (what `sha256sum` prints).
    assert laion.version.split("-")[1] == laion.weights_sha256[LAION_CHECKPOINT][:12]
    assert clap_embedder(laion_dir / LAION_CHECKPOINT, amodel="HTSAT-tiny").key == laion.key  # the .pt file itself works too


@pytest.mark.parametrize("which", ["laion", "hf"])
def test_extract_track_and_searcher_find_the_query_track(which, request, tmp_path):
    emb = request.getfixturevalue(which)
    paths = tiny_catalogue(tmp_path / "cat")
    searcher = searcher_over(paths, emb)
    # One neighbour per query clip: its own catalogue copy (random tiny models put every clip close).
    out = searcher.search(paths[1].read_bytes(), max_results=3, top_k_per_chunk=1)
    assert out["embedder"] == emb.key and out["query_clips"] == 2  # 10 s + a padded 5 s tail
    assert out["results"][0]["track_id"] == "t1"
    assert out["results"][0]["combined_score"] == pytest.approx(1.0)
    assert out["results"][0]["evidence"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)


# --------------------------------------------------------------------------- LAION specifics


def test_laion_vectors_equal_laion_clap_reference_path(laion_dir, laion, clips):
    """Our batched path = laion-clap's get_audio_embedding (int16 quantised, non-fusion features)."""
    from transformers import RobertaConfig

    reference = build_laion_model("HTSAT-tiny", RobertaConfig.from_pretrained(str(laion_dir / "roberta-base")))
    state = torch.load(laion_dir / LAION_CHECKPOINT, weights_only=True)["state_dict"]
    reference.load_state_dict({k[len("module."):]: v for k, v in state.items()})
    quantised = (np.clip(clips, -1, 1) * 32767.0).astype(np.int16) / 32767.0
    data = [{"waveform": torch.from_numpy(q.astype(np.float32)), "longer": torch.tensor([False])} for q in quantised]
    with torch.no_grad():
        expected = reference.get_audio_embedding(data).numpy()
    np.testing.assert_allclose(laion.embed(clips), expected, atol=2e-5)


def test_laion_text_query_embeds_into_the_audio_space(laion):
    vectors = laion.embed_text(["calm solo piano", "drum and bass"])
    assert vectors.shape == (2, laion.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(laion.embed_text(["calm solo piano"])[0], vectors[0], atol=1e-6)


def test_laion_without_tokenizer_files_embeds_audio_but_text_names_the_files(laion_dir, tmp_path, clips):
    (tmp_path / LAION_CHECKPOINT).symlink_to(laion_dir / LAION_CHECKPOINT)
    write_roberta_text_files(tmp_path / "roberta-base", tokenizer=False)
    emb = clap_embedder(tmp_path, amodel="HTSAT-tiny")
    assert emb.embed(clips[:1]).shape == (1, 512)
    with pytest.raises(ModelWeightsError, match=r"vocab\.json, merges\.txt missing in .*roberta-base.*roberta-base"):
        emb.embed_text(["calm solo piano"])


def test_laion_without_text_model_config_says_what_to_copy_where(laion_dir, tmp_path):
    (tmp_path / LAION_CHECKPOINT).symlink_to(laion_dir / LAION_CHECKPOINT)
    with pytest.raises(ModelWeightsError) as err:
        clap_embedder(tmp_path, amodel="HTSAT-tiny")
    message = str(err.value)
    assert "config.json" in message and str(tmp_path / "roberta-base") in message
    assert "FacebookAI/roberta-base" in message and "embedder.weights_path" in message


def test_laion_checkpoint_of_another_audio_model_is_refused(laion_dir):
    with pytest.raises(ModelWeightsError, match="does not fit .*HTSAT-base.*options.amodel"):
        clap_embedder(laion_dir, amodel="HTSAT-base")


def test_unreadable_checkpoint_is_a_weights_error(laion_dir, tmp_path):
    (tmp_path / "roberta-base").symlink_to(laion_dir / "roberta-base")
    (tmp_path / LAION_CHECKPOINT).write_bytes(b"not a torch file")
    with pytest.raises(ModelWeightsError, match="cannot read the LAION CLAP checkpoint"):
        clap_embedder(tmp_path, amodel="HTSAT-tiny")


# --------------------------------------------------------------------------- transformers specifics


def test_torch_log_mel_equals_clap_feature_extractor_rand_trunc(hf, clips):
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor.from_pretrained(str(hf.weights_path))
    expected = extractor(list(clips), sampling_rate=SR, truncation="rand_trunc", return_tensors="np")
    assert not expected["is_longer"].any()
    ours = hf._backend.log_mel(torch.from_numpy(clips)).numpy()
    assert ours.shape == expected["input_features"].shape == (3, 1, 1001, 64)
    # float32 STFT here, float64 there: equal up to rounding, which shows only far below the peak.
    np.testing.assert_allclose(ours, expected["input_features"], atol=0.05)
    assert np.percentile(np.abs(ours - expected["input_features"]), 99) < 5e-3


def test_transformers_checkpoint_missing_tensors_is_an_error_not_random_weights(hf_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((hf_dir / name).read_bytes())
    tensors = load_file(hf_dir / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("audio_projection")}, tmp_path / "model.safetensors")
    with pytest.raises(ModelWeightsError, match="incomplete: 4 missing"):
        clap_embedder(tmp_path)


# --------------------------------------------------------------------------- errors and versions


def test_damaged_transformers_weights_are_a_one_line_weights_error(hf_dir, tmp_path):
    import shutil

    directory = Path(shutil.copytree(hf_dir, tmp_path / "clap"))
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50_000])
    with pytest.raises(ModelWeightsError) as err:
        clap_embedder(directory)
    message = str(err.value)
    assert str(directory) in message and "model.safetensors" in message and "incomplete metadata" in message
    assert "\n" not in message


def test_transformers_format_on_a_wav2vec2_directory_is_refused_by_name(tmp_path):
    from test_wav2vec2 import save_tiny_wav2vec2

    directory = save_tiny_wav2vec2(tmp_path / "w2v")
    with pytest.raises(ModelWeightsError, match=r"config.json is a 'wav2vec2' model, not 'clap'"):
        clap_embedder(directory, format="transformers")


def test_clap_config_with_fields_of_the_wrong_type_is_a_weights_error(hf_dir, tmp_path):
    import shutil

    directory = Path(shutil.copytree(hf_dir, tmp_path / "clap"))
    config = json.loads((directory / "config.json").read_text())
    config["audio_config"]["num_attention_heads"] = 2  # a list per Swin stage in a real CLAP config
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelWeightsError, match=r"cannot load the CLAP audio tower from .*StrictDataclass"):
        clap_embedder(directory)


def test_missing_weights_name_the_files_where_to_get_them_and_where_to_put_them(tmp_path):
    for path in (None, str(tmp_path / "nowhere"), str(tmp_path)):
        cfg = EmbedderConfig(name="clap", device="cpu", weights_path=path)
        with pytest.raises(ModelWeightsError) as err:
            create_embedder(cfg, clip_s=CLIP_S)
        message = str(err.value)
        assert LAION_CHECKPOINT in message and "huggingface.co/lukewys/laion_clap" in message
        assert "model.safetensors" in message and "laion/clap-htsat-unfused" in message
        assert "/Volumes/" in message and "embedder.weights_path" in message


def test_transformers_directory_without_weights_names_them(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clap"}))
    with pytest.raises(ModelWeightsError, match="preprocessor_config.json, model.safetensors missing"):
        clap_embedder(tmp_path)


@pytest.mark.parametrize("which", ["laion_dir", "hf_dir"])
def test_clips_other_than_ten_seconds_are_refused(which, request):
    cfg = EmbedderConfig(name="clap", device="cpu", weights_path=str(request.getfixturevalue(which)))
    with pytest.raises(ConfigError, match="exactly 10 s clips.*clips.clip_s=10"):
        create_embedder(cfg, clip_s=5.0)


def test_bad_options_are_config_errors(hf_dir):
    with pytest.raises(ConfigError, match="unknown embedder.options for clap: fusion"):
        clap_embedder(hf_dir, fusion="yes")
    with pytest.raises(ConfigError, match="options.format"):
        clap_embedder(hf_dir, format="onnx")
    with pytest.raises(ConfigError, match="only apply to LAION"):
        clap_embedder(hf_dir, amodel="HTSAT-tiny")


def test_version_changes_with_the_weights_and_only_with_them(tmp_path, hf):
    same = clap_embedder(save_tiny_transformers_clap(tmp_path / "same", seed=0))
    other = clap_embedder(save_tiny_transformers_clap(tmp_path / "other", seed=1))
    assert same.version == hf.version
    assert other.version != hf.version
    assert other.version.split("-")[1] != hf.version.split("-")[1]


def test_empty_or_non_string_text_is_a_parameter_error(hf):
    for bad in ([], [""], "calm piano", [3]):
        with pytest.raises(ParameterError):
            hf.embed_text(bad)


def test_an_audio_tower_saved_alone_loads(hf_dir, hf, tmp_path, clips):
    """``ClapAudioModelWithProjection.save_pretrained`` says model_type "clap_audio_model"."""
    from transformers import ClapAudioModelWithProjection, ClapFeatureExtractor

    tower = tmp_path / "audio_tower"
    ClapAudioModelWithProjection.from_pretrained(str(hf_dir)).save_pretrained(tower)
    ClapFeatureExtractor.from_pretrained(str(hf_dir)).save_pretrained(tower)
    assert '"clap_audio_model"' in (tower / "config.json").read_text()
    np.testing.assert_allclose(clap_embedder(tower).embed(clips[:2]), hf.embed(clips[:2]), atol=1e-5)


def test_damaged_weights_are_a_weights_error_with_an_older_huggingface_hub(hf_dir, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.errors

    monkeypatch.delattr(huggingface_hub.errors, "StrictDataclassError", raising=False)  # not in older releases
    directory = Path(shutil.copytree(hf_dir, tmp_path / "clap"))
    (directory / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelWeightsError, match="model.safetensors"):
        clap_embedder(directory)
