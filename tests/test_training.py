"""Learned similarity: metadata ground truth, the 5 + 5 pair rule, the split, losses, saving, the job."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from soundalike.config import ClipsConfig, load_config
from soundalike.errors import ConfigError, ModelWeightsError, ParameterError
from soundalike.training.dataset import LabelledTrack, split_tracks
from soundalike.training.model import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CnnParams,
    ConvBranch,
    FrontendParams,
    HeadParams,
    ProjectionHead,
    branch_spec,
    contrastive_loss,
    load_branch,
    pair_distance,
    save_branch,
    triplet_loss,
)
from soundalike.training.similarity import (
    SimilarityWeights,
    draw_pairs,
    neighbour_pools,
    similarity_matrix,
    track_features,
    triplets,
)


def _entry(style: str, tags: list[str], tempo: float, key: str, instruments: list[str], motif=None) -> dict:
    return {"style": style, "tags": tags, "tempo_bpm": tempo, "key": key, "instruments": instruments,
            "motif_id": motif}


def _random_similarity(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.random((n, n))
    sim = (a + a.T) / 2
    np.fill_diagonal(sim, 1.0)
    return sim


# --------------------------------------------------------------------------- metadata similarity


def test_metadata_similarity_is_the_documented_weighted_jaccard():
    piano = _entry("piano_arpeggio", ["calm", "piano"], 80, "C major", ["piano"])
    piano_fast = _entry("piano_arpeggio", ["calm", "piano"], 140, "D minor", ["piano"])
    pad = _entry("ambient_pad", ["calm", "synth"], 70, "C major", ["synth pad"])
    sim = similarity_matrix([track_features(e) for e in (piano, piano_fast, pad)], SimilarityWeights())

    assert np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 1.0)
    # Same tags and instruments, other tempo band and key: (0.5 + 0.2) / 1.0.
    assert sim[0, 1] == pytest.approx(0.7)
    # Tags {piano_arpeggio, calm, piano} vs {ambient_pad, calm, synth}: 1/5; same band and key.
    assert sim[0, 2] == pytest.approx((0.5 * 0.2 + 0.2 + 0.1) / 1.0)
    assert sim[1, 2] == pytest.approx(0.5 * 0.2)


def test_groups_missing_from_both_tracks_do_not_count():
    a = {"file": "a.wav", "tags": "calm, piano"}  # CSV-style tags, nothing else
    b = {"file": "b.wav", "tags": ["calm", "piano"]}
    assert similarity_matrix([track_features(a), track_features(b)], SimilarityWeights())[0, 1] == 1.0


# --------------------------------------------------------------------------- pairs


def test_every_track_gets_itself_plus_4_of_its_10_most_similar_and_5_of_its_10_least_similar():
    sim = _random_similarity(30)
    pairs = draw_pairs(sim, seed=7)
    most, least = neighbour_pools(sim, pool=10, rng=np.random.default_rng(0))  # no ties in random sims
    assert len(pairs) == 30 * 10
    for i in range(30):
        ranked = [j for j in np.argsort(-sim[i]) if j != i]
        assert set(most[i]) == set(ranked[:10]) and set(least[i]) == set(ranked[-10:])
        mine = pairs.reference == i
        pos, neg = pairs.other[mine & pairs.positive], pairs.other[mine & ~pairs.positive]
        assert len(pos) == 5 and len(neg) == 5
        assert pos[0] == i  # the track with itself: two clips of it
        assert len(set(pos[1:])) == 4 and set(pos[1:]) <= set(ranked[:10])
        assert len(set(neg)) == 5 and set(neg) <= set(ranked[-10:])
    assert np.allclose(pairs.similarity, sim[pairs.reference, pairs.other])


def test_pairs_are_seeded():
    sim = _random_similarity(25)
    a, b, c = draw_pairs(sim, seed=3), draw_pairs(sim, seed=3), draw_pairs(sim, seed=4)
    assert np.array_equal(a.other, b.other)
    assert not np.array_equal(a.other, c.other)


def test_ties_are_broken_at_random_not_by_catalogue_order():
    sim = np.full((25, 25), 0.5)  # every other track equally similar
    np.fill_diagonal(sim, 1.0)
    most, _ = neighbour_pools(sim, pool=10, rng=np.random.default_rng(1))
    assert sorted(set(most.ravel())) == list(range(25))  # not always tracks 0..10


def test_small_catalogues_shrink_the_pools_so_they_never_overlap_and_too_small_ones_are_refused():
    sim = _random_similarity(13)
    most, least = neighbour_pools(sim, pool=10, rng=np.random.default_rng(0))
    assert most.shape == (13, 6)
    assert all(not set(most[i]) & set(least[i]) for i in range(13))
    draw_pairs(sim, seed=0)  # 6 >= 4 similar and 5 dissimilar: fine
    with pytest.raises(ParameterError, match="need at least 11 tracks"):
        draw_pairs(_random_similarity(10), seed=0)


def test_triplets_pair_each_positive_with_a_negative_of_the_same_reference():
    pairs = draw_pairs(_random_similarity(22), seed=0)
    a, p, n = triplets(pairs)
    assert len(a) == 22 * 5
    pos = set(zip(pairs.reference[pairs.positive], pairs.other[pairs.positive]))
    neg = set(zip(pairs.reference[~pairs.positive], pairs.other[~pairs.positive]))
    assert all((x, y) in pos and (x, z) in neg for x, y, z in zip(a, p, n))


# --------------------------------------------------------------------------- split


def test_split_is_by_track_keeps_motif_groups_together_and_sees_every_style():
    tracks = []
    for i in range(40):
        style = ("piano", "pad", "drums", "strings")[i % 4]
        motif = f"m{i // 8}" if i % 3 == 0 else None
        tracks.append(LabelledTrack(path=f"/c/{i:02d}.wav", entry={"style": style, "motif_id": motif},
                                    features={"tags": frozenset([style])}))
    train, held = split_tracks(tracks, heldout_fraction=0.25, seed=0)
    assert not set(train) & set(held) and len(train) + len(held) == 40
    assert 6 <= len(held) <= 10
    for side in (train, held):
        assert {tracks[i].style for i in side} == {"piano", "pad", "drums", "strings"}
    side_of = {i: "held" if i in set(held) else "train" for i in range(40)}
    for motif in {t.entry["motif_id"] for t in tracks} - {None}:
        assert len({side_of[i] for i, t in enumerate(tracks) if t.entry["motif_id"] == motif}) == 1
    again = split_tracks(tracks, heldout_fraction=0.25, seed=0)
    assert np.array_equal(again[1], held)


# --------------------------------------------------------------------------- model and losses


def _fixed_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 32, 48, generator=g)  # 16 clips of log-mel [32 bands, 48 frames]
    a, b = torch.arange(0, 16, 2), torch.arange(1, 16, 2)
    positive = torch.tensor([True, False] * 4)
    similarity = torch.where(positive, torch.tensor(0.8), torch.tensor(0.1))
    return x, a, b, positive, similarity


@pytest.mark.parametrize("loss_name", ["contrastive", "triplet"])
def test_a_few_training_steps_reduce_the_loss_on_a_fixed_batch(loss_name):
    torch.manual_seed(0)
    branch = ConvBranch(CnnParams(channels=(8, 16), dim=16))
    x, a, b, positive, similarity = _fixed_batch()
    opt = torch.optim.Adam(branch.parameters(), lr=3e-3)

    def loss_now() -> torch.Tensor:
        if loss_name == "contrastive":
            return contrastive_loss(pair_distance(branch, x[a], x[b]), positive, similarity, margin=1.0)
        anchor, pos, neg = x[0:5], x[5:10], x[10:15]
        return triplet_loss(pair_distance(branch, anchor, pos), pair_distance(branch, anchor, neg),
                            torch.full((5,), 0.9), torch.full((5,), 0.1), margin=1.0)

    first = float(loss_now())
    for _ in range(15):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    assert first > 0
    assert float(loss_now()) < 0.5 * first


def test_contrastive_margin_comes_from_metadata_dissimilarity():
    d = torch.tensor([0.5, 0.5, 0.5, 0.5])
    positive = torch.tensor([True, True, False, False])
    s = torch.tensor([0.8, 0.2, 0.8, 0.2])  # targets 0.2, 0.8, 0.2, 0.8
    per_pair = [float(contrastive_loss(d[i : i + 1], positive[i : i + 1], s[i : i + 1], margin=1.0)) for i in range(4)]
    assert per_pair == pytest.approx([0.09, 0.0, 0.0, 0.09])


def test_untrained_head_is_its_base_embedder():
    head = ProjectionHead(HeadParams(dim=12, hidden=8))
    x = torch.nn.functional.normalize(torch.randn(5, 12), dim=1)
    assert torch.allclose(head(x), x, atol=1e-6)


def test_saved_branch_reloads_bit_identically(tmp_path):
    torch.manual_seed(1)
    branch = ConvBranch(CnnParams(channels=(4, 8), dim=8))
    branch.train()
    branch(torch.randn(6, 32, 40))  # move the batch-norm statistics off their initial values
    branch.eval()
    spec = branch_spec(kind="cnn", clip_s=2.0, cnn=CnnParams(channels=(4, 8), dim=8),
                       frontend=FrontendParams(n_mels=32))
    sha = save_branch(branch, spec, tmp_path / "m")
    loaded, loaded_spec = load_branch(tmp_path / "m")

    assert loaded_spec == spec
    saved, again = branch.state_dict(), loaded.state_dict()
    assert saved.keys() == again.keys()
    assert all(torch.equal(saved[k], again[k]) and saved[k].dtype == again[k].dtype for k in saved)
    x = torch.randn(3, 32, 40)
    with torch.no_grad():
        assert torch.equal(branch(x), loaded(x))
    assert save_branch(loaded, loaded_spec, tmp_path / "copy") == sha  # same bytes, same checksum
    assert (tmp_path / "m" / WEIGHTS_FILE).read_bytes() == (tmp_path / "copy" / WEIGHTS_FILE).read_bytes()


def test_a_mismatched_or_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelWeightsError, match="soundalike train"):
        load_branch(tmp_path)
    branch = ConvBranch(CnnParams(channels=(4,), dim=8))
    spec = branch_spec(kind="cnn", clip_s=2.0, cnn=CnnParams(channels=(4,), dim=8), frontend=FrontendParams())
    save_branch(branch, spec, tmp_path)
    spec["cnn"]["dim"] = 16
    (tmp_path / CONFIG_FILE).write_text(json.dumps(spec))
    with pytest.raises(ModelWeightsError, match="does not match"):
        load_branch(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x80\x04not safetensors")  # e.g. a pickle: refused, not loaded
    with pytest.raises(ModelWeightsError, match="safetensors"):
        load_branch(tmp_path)


def test_training_settings_are_validated_at_load():
    assert load_config("conf/local.yaml").training.loss == "contrastive"
    with pytest.raises(ConfigError, match="training.loss"):
        load_config("conf/local.yaml", ["training.loss=hinge"])
    with pytest.raises(ConfigError, match="training.heldout_fraction"):
        load_config("conf/local.yaml", ["training.heldout_fraction=1.5"])


# --------------------------------------------------------------------------- the job, end to end


@pytest.mark.parametrize("branch, loss", [("cnn", "triplet"), ("head", "contrastive")])
def test_train_command_trains_evaluates_saves_logs_and_registers(tiny_catalogue, tmp_path, capsys, branch, loss):
    from soundalike.embedders import create_embedder
    from soundalike.config import EmbedderConfig
    from soundalike.train_cli import add_train_parser

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    work = tmp_path / "work"
    args = parser.parse_args([
        "train", "--conf", "conf/local.yaml", "--branch", branch, "--loss", loss, "--epochs", "2", "--json",
        "--set", f"catalogue.path={tiny_catalogue}", "--set", f"workdir={work}",
        "--set", "clips.clip_s=2.0", "--set", "clips.hop_s=2.0", "--set", "clips.min_tail_s=1.0",
        "--set", "training.hop_s=2.0", "--set", "training.crop_s=1.0", "--set", "training.heldout_fraction=0.2",
        "--set", "training.max_clips_per_track=3", "--set", "training.dim=16",
        "--set", "training.device=cpu", "--set", "embedder.device=cpu",
    ])
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)

    model_dir = Path(out["model_dir"])
    assert model_dir == work / "models" / "siamese"
    assert {CONFIG_FILE, WEIGHTS_FILE, "training.json"} <= {p.name for p in model_dir.iterdir()}
    assert len(out["losses"]) == 2 and all(np.isfinite(out["losses"]))
    assert not set(out["train_tracks"]) & set(out["heldout_tracks"])
    for side in ("learned", "baseline"):
        for gallery in ("catalogue", "heldout"):
            m = out["evaluation"][side][gallery]
            assert m["n_queries"] == len(out["heldout_tracks"]) and 0.0 <= m["precision_at_5"] <= 1.0
    assert out["evaluation"]["baseline_embedder"].startswith("mel@")

    # The saved branch is the registry's siamese embedder, with the same key as in the report.
    emb = create_embedder(EmbedderConfig(name="siamese", weights_path=str(model_dir), device="cpu"), clip_s=2.0)
    assert emb.key == out["embedder_key"] and out["weights_sha256"][:12] in emb.version

    import mlflow
    from mlflow import MlflowClient

    assert out["mlflow"]["model_version"] == 1
    client = MlflowClient()
    run = client.get_run(out["mlflow"]["run_id"])
    assert run.data.params["training.loss"] == loss and run.data.params["training.branch"] == branch
    assert "learned_catalogue_precision_at_5" in run.data.metrics
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")] == out["losses"]
    version = client.get_model_version("soundalike_siamese", "1")
    assert version.tags["embedder"] == emb.key
    fetched = mlflow.artifacts.download_artifacts("models:/soundalike_siamese/1", dst_path=str(tmp_path / "dl"))
    assert (Path(fetched) / "artifacts" / model_dir.name / WEIGHTS_FILE).read_bytes() == (model_dir / WEIGHTS_FILE).read_bytes()
    # The registered model is an MLflow model with a signature that embeds audio like the catalogue.
    model = mlflow.pyfunc.load_model("models:/soundalike_siamese/1")
    assert model.metadata.signature is not None
    import base64
    import io

    import pandas as pd
    import soundfile as sf

    from soundalike.extract import extract_track
    from soundalike.sample import synthesize_track

    buf = io.BytesIO()
    sf.write(buf, synthesize_track("piano_arpeggio", duration_s=7.0, sample_rate_hz=22050, seed=3), 22050, format="WAV")
    answer = model.predict(pd.DataFrame({"audio_b64": [base64.b64encode(buf.getvalue()).decode()]}))[0]
    want = extract_track(buf.getvalue(), emb, ClipsConfig(clip_s=2.0, hop_s=2.0, min_tail_s=1.0))
    assert answer["embedder"] == emb.key
    np.testing.assert_allclose(np.array(answer["vectors"]), want.vectors, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_catalogue(tmp_path_factory):
    """20 short synthetic tracks with a sidecar: enough for the 5 + 5 rule on the training side."""
    from soundalike.sample import generate_catalogue

    out = tmp_path_factory.mktemp("tiny_catalogue")
    generate_catalogue(out, n_tracks=20, seed=3, min_duration_s=6.0, max_duration_s=7.0, progress=False)
    return out


# --------------------------------------------------------------------------- refusals before training


def _styled_catalogue(root: Path, styles: list[str], *, seconds: float = 5.0, sample_rate_hz: int = 16000) -> Path:
    """Generated tracks, one per entry of ``styles`` (the sidecar's style; the audio cycles the real styles)."""
    import soundfile as sf

    from soundalike.sample import STYLES, synthesize_track

    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, style in enumerate(styles):
        name = f"t{i:02d}.wav"
        audio = synthesize_track(STYLES[i % len(STYLES)], duration_s=seconds, sample_rate_hz=sample_rate_hz, seed=i)
        sf.write(root / name, audio, sample_rate_hz)
        entries.append({"file": name, **_entry(style, [style, ("calm", "bright")[i % 2]], 80.0 + 7 * i,
                                                ("C", "G")[i % 2], ["synth"])})
    (root / "catalogue.json").write_text(json.dumps(entries))
    return root


def _train(catalogue: Path, work: Path, *extra: str) -> list[str]:
    """``soundalike train`` arguments: short clips, one epoch, CPU, no MLflow."""
    conf = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"  # some tests run from another directory
    return ["train", "--conf", str(conf), "--no-mlflow", "--epochs", "1",
            "--set", f"catalogue.path={catalogue}", "--set", f"workdir={work}",
            "--set", "clips.clip_s=2.0", "--set", "clips.hop_s=2.0", "--set", "clips.min_tail_s=1.0",
            "--set", "training.hop_s=2.0", "--set", "training.max_clips_per_track=2",
            "--set", "training.device=cpu", "--set", "embedder.device=cpu", *extra]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    from soundalike.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pairs_catalogue(tmp_path_factory) -> Path:
    """12 tracks, two per style."""
    return _styled_catalogue(tmp_path_factory.mktemp("pairs"), [f"style{i // 2}" for i in range(12)])


def test_split_holds_out_the_fraction_of_the_catalogue_not_one_track_per_style(pairs_catalogue):
    from soundalike.training.dataset import labelled_tracks

    tracks = labelled_tracks(pairs_catalogue, "catalogue.json")
    for fraction, n_held in ((0.01, 1), (0.25, 3), (0.5, 6), (0.9, 6)):  # a style keeps one training track
        train, held = split_tracks(tracks, heldout_fraction=fraction, seed=0)
        assert (len(train), len(held)) == (12 - n_held, n_held)


def test_too_few_training_tracks_says_why_and_its_advice_works(pairs_catalogue, tmp_path, capsys):
    code, out, err = _run(_train(pairs_catalogue, tmp_path / "w"), capsys)
    assert code == 2 and "epoch" not in out and err.count("\n") == 1
    assert "9 training tracks are too few" in err and "at least 11 training tracks" in err
    assert "12 tracks have metadata, 3 of them held out" in err
    fraction = err.split("training.heldout_fraction=")[1].split()[0]
    code, out, err = _run(_train(pairs_catalogue, tmp_path / "w2", "--set", f"training.heldout_fraction={fraction}"),
                          capsys)
    assert code == 0, err
    assert "12 tracks with metadata: 11 train, 1 held out" in out


def test_no_track_with_a_usable_clip_is_refused_before_training(tmp_path, capsys):
    catalogue = _styled_catalogue(tmp_path / "short", [f"style{i % 2}" for i in range(12)], seconds=3.0)
    code, out, err = _run(_train(catalogue, tmp_path / "w", "--set", "clips.clip_s=10.0", "--set", "clips.hop_s=10.0",
                                 "--set", "clips.min_tail_s=5.0", "--set", "training.hop_s=5.0",
                                 "--set", "training.heldout_fraction=0.05"), capsys)
    assert code == 2 and "epoch" not in out and err.count("\n") == 1
    assert "none of the 11 training tracks gives a usable clip" in err and "clips.min_tail_s=5.0" in err
    assert not (tmp_path / "w" / "models" / "siamese" / WEIGHTS_FILE).exists()


def test_a_catalogue_with_nothing_to_hold_out_is_refused(tmp_path, capsys):
    catalogue = _styled_catalogue(tmp_path / "solo", [f"style{i}" for i in range(12)])
    code, out, err = _run(_train(catalogue, tmp_path / "w"), capsys)
    assert code == 2 and "epoch" not in out and err.count("\n") == 1
    assert "no track of the 12 with metadata can be held out" in err and "at least two tracks of some style" in err


def test_a_result_without_heldout_metrics_is_never_logged_or_registered(tmp_path):
    from soundalike.training.tracking import log_training_run
    from soundalike.training.train import TrainingResult

    empty = {"n_queries": 0, "gallery_size": 12, "precision_at_5": None, "mean_tag_similarity_at_5": None}
    result = TrainingResult(
        model_dir=tmp_path / "model", embedder_key="siamese@x", weights_sha256="0" * 64, spec={}, losses=[1.0],
        evaluation={side: {"catalogue": empty, "heldout": empty} for side in ("learned", "baseline")},
        train_tracks=[], heldout_tracks=[], n_train_clips=0, params={})
    cfg = load_config("conf/local.yaml", [f"workdir={tmp_path / 'w'}"])
    with pytest.raises(ConfigError, match="no held-out metrics"):
        log_training_run(cfg, result)
    assert not (tmp_path / "w" / "mlflow.db").exists()


def test_an_output_dir_that_is_a_file_is_refused_before_training(pairs_catalogue, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    code, out, err = _run(_train(pairs_catalogue, tmp_path / "w", "--output-dir", str(taken),
                                 "--set", "training.heldout_fraction=0.08"), capsys)
    assert code == 2 and "epoch" not in out and err.count("\n") == 1
    assert f"training.output_dir {taken} is a file" in err
    code, out, err = _run(_train(pairs_catalogue, tmp_path / "w", "--output-dir", str(taken / "model"),
                                 "--set", "training.heldout_fraction=0.08"), capsys)
    assert code == 2 and "epoch" not in out and "cannot create training.output_dir" in err


def test_a_refused_run_leaves_no_output_dir_behind(pairs_catalogue, tmp_path, capsys):
    out_dir = tmp_path / "fresh" / "model"
    code, out, err = _run(_train(pairs_catalogue, tmp_path / "w", "--output-dir", str(out_dir),
                                 "--set", "training.base_embedder=nope"), capsys)
    assert code == 2 and "training.base_embedder 'nope' is not an embedder" in err
    assert not (tmp_path / "fresh").exists()


def test_base_embedder_errors_name_the_settings_it_reads(pairs_catalogue, tmp_path, capsys):
    code, _, err = _run(_train(pairs_catalogue, tmp_path / "w", "--set", "training.base_embedder=wav2vec2",
                               "--set", f"embedder.weights_path={tmp_path}"), capsys)
    assert code == 2 and "embedder.name is mel" in err and f"embedder.weights_path={tmp_path} is not read" in err
    assert "set embedder.name=wav2vec2" in err and "is not set" not in err
    code, _, err = _run(_train(pairs_catalogue, tmp_path / "w", "--set", "training.base_embedder=nope"), capsys)
    assert code == 2 and "training.base_embedder 'nope' is not an embedder" in err and "set embedder.name" not in err


def test_a_head_over_a_relative_base_path_loads_from_any_directory(pairs_catalogue, tmp_path, capsys, monkeypatch):
    from soundalike.config import EmbedderConfig
    from soundalike.embedders import create_embedder
    from test_wav2vec2 import save_tiny_wav2vec2

    project = tmp_path / "project"
    save_tiny_wav2vec2(project / "models" / "w2v")
    monkeypatch.chdir(project)
    code, out, err = _run(_train(pairs_catalogue, project / "work", "--set", "training.base_embedder=wav2vec2",
                                 "--set", "embedder.name=wav2vec2", "--set", "embedder.weights_path=models/w2v",
                                 "--set", "training.heldout_fraction=0.08"), capsys)
    assert code == 0, err
    model_dir = project / "work" / "models" / "siamese"
    spec = json.loads((model_dir / CONFIG_FILE).read_text())
    assert spec["base_embedder"]["weights_path"] == str(project / "models" / "w2v")
    monkeypatch.chdir(tmp_path)
    emb = create_embedder(EmbedderConfig(name="siamese", weights_path=str(model_dir), device="cpu"), clip_s=2.0)
    assert emb.base.name == "wav2vec2" and emb.dim == 32
