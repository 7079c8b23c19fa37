"""Train the ``siamese`` embedder on a catalogue's metadata and evaluate it on held-out tracks.

:func:`train_similarity` is the whole job without MLflow (:mod:`soundalike.training.tracking`
logs and registers its result):

1. the catalogue's tracks with metadata (:func:`~soundalike.training.dataset.labelled_tracks`),
   split by track into train and held-out (:func:`~soundalike.training.dataset.split_tracks`);
2. the training tracks' clips as branch inputs (log-mel spectrograms for ``cnn``, the frozen base
   embedder's vectors for ``head``), cut every ``training.hop_s`` seconds;
3. every epoch, fresh seeded pairs over the training tracks' metadata similarity
   (:func:`~soundalike.training.similarity.draw_pairs`), each side a random usable clip of its
   track (a track paired with itself gets two different clips when it has them); AdamW on the
   contrastive or triplet loss (:mod:`soundalike.training.model`), cosine learning-rate decay;
4. the branch saved as the ``siamese`` embedder's files in ``training.output_dir``;
5. the held-out evaluation (:func:`evaluate_embedders`), which embeds every track through the
   registry and :func:`soundalike.extract.extract_track` -- exactly as the embed stage and the
   query model will -- for the learned embedder and for the base embedder it is compared with.

Evaluation (honest by construction: no held-out track, nor any alternate take of one, gives a
clip or a pair to training). A track's vector is the normalised mean of its usable clip vectors.
Each held-out track queries two galleries: ``catalogue`` (every other track of the catalogue,
training tracks included: a new track arriving in a catalogue the model was trained on) and
``heldout`` (only the other held-out tracks: nothing the model has seen). Reported per gallery:
``precision_at_5`` (share of the 5 nearest tracks with the query's style) and
``mean_tag_similarity_at_5`` (mean Jaccard index of the query's and the neighbours' tag sets,
style included).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from soundalike.config import Config, EmbedderConfig, config_to_dict
from soundalike.embedders import Embedder, create_embedder
from soundalike.embedders.base import available_embedders, uses_weights
from soundalike.embedders.mel import _resolve_device
from soundalike.errors import AudioDecodeError, ConfigError
from soundalike.extract import extract_track
from soundalike.training.dataset import LabelledTrack, batched, clip_inputs, labelled_tracks, split_tracks
from soundalike.training.model import (
    CnnParams,
    ConvBranch,
    FrontendParams,
    HeadParams,
    ProjectionHead,
    SpectrogramFrontend,
    branch_spec,
    contrastive_loss,
    parameter_count,
    save_branch,
    triplet_loss,
)
from soundalike.training.similarity import (SimilarityWeights, draw_pairs, min_tracks_for_pairs, similarity_matrix,
                                             triplets)

Echo = Callable[[str], None]

#: Neighbours per query in the held-out evaluation.
EVAL_K = 5


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced.

    Attributes
    ----------
    model_dir : Path
        The ``siamese`` embedder's files (``embedder.weights_path``).
    embedder_key : str
        ``siamese@<version>``, as the tables will store it.
    weights_sha256 : str
    spec : dict
        ``siamese.json``.
    losses : list of float
        Mean training loss per epoch.
    evaluation : dict
        :func:`evaluate_embedders` output: ``{"learned": {gallery: metrics}, "baseline": {...},
        "baseline_embedder": key, "learned_embedder": key}``.
    train_tracks, heldout_tracks : list of str
        Paths on each side of the split (training tracks without usable clips are left out).
    n_train_clips : int
    params : dict
        The settings the run used (logged as MLflow params).
    seconds : dict
        Wall time of each phase.
    """

    model_dir: Path
    embedder_key: str
    weights_sha256: str
    spec: dict
    losses: list[float]
    evaluation: dict
    train_tracks: list[str]
    heldout_tracks: list[str]
    n_train_clips: int
    params: dict
    seconds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["model_dir"] = str(self.model_dir)
        return out


def train_similarity(cfg: Config, *, echo: Echo | None = None) -> TrainingResult:
    """Train, save and evaluate the ``siamese`` embedder as ``cfg.training`` says.

    Parameters
    ----------
    cfg : Config
        Uses ``catalogue`` (tracks and sidecar), ``clips`` (clip length, flags, and the evaluation's
        clip policy), ``embedder`` (batch size; its settings for the base embedder when it names
        it), ``training`` and ``workdir``.
    echo : callable, optional
        Receives one progress line per phase and per epoch.

    Raises
    ------
    ConfigError
        Checked before anything is trained: an unusable output directory, no usable metadata,
        no track that can be held out, too few training tracks (with usable clips) for the pair
        rule, a base embedder that cannot be built from the settings given. After training: no
        held-out track with a vector (the branch stays saved; nothing is evaluated).
    """
    say = echo or (lambda line: None)
    t = cfg.training
    timer = _Timer()
    device = _resolve_device(t.device)
    torch.manual_seed(t.seed)
    weights = SimilarityWeights(tags=t.tag_weight, instruments=t.instrument_weight, tempo=t.tempo_weight,
                                key=t.key_weight)

    out_dir = _usable_output_dir(cfg)  # before the work, not after it
    base_cfg = _base_config(cfg)
    tracks = labelled_tracks(cfg.catalogue.path, cfg.catalogue.metadata_file)
    train_idx, held_idx = split_tracks(tracks, heldout_fraction=t.heldout_fraction, seed=t.seed)
    say(f"{len(tracks)} tracks with metadata: {len(train_idx)} train, {len(held_idx)} held out")
    _check_heldout(tracks, held_idx, t)
    _check_enough_training_tracks(len(train_idx), n_tracks=len(tracks), n_heldout=len(held_idx), t=t)

    base = create_embedder(base_cfg, clip_s=cfg.clips.clip_s)
    if t.branch == "cnn":
        frontend = SpectrogramFrontend(FrontendParams())
        sample_rate_hz = frontend.params.sample_rate_hz
        featurize = batched(lambda audio: frontend(torch.from_numpy(audio).to(device)))
        cnn = CnnParams(dim=t.dim)
        branch: torch.nn.Module = ConvBranch(cnn)
        spec = branch_spec(kind="cnn", clip_s=cfg.clips.clip_s, cnn=cnn, frontend=frontend.params)
    else:
        sample_rate_hz = base.sample_rate_hz
        featurize = batched(lambda audio: torch.from_numpy(base.embed(audio)).to(device))
        head = HeadParams(dim=base.dim)
        branch = ProjectionHead(head)
        spec = branch_spec(kind="head", clip_s=cfg.clips.clip_s, head=head,
                           base_embedder={"name": base.name, "options": dict(base_cfg.options or {}),
                                          "weights_path": _absolute(base_cfg.weights_path)})
    branch = branch.to(device)

    inputs: list[torch.Tensor] = []
    kept: list[int] = []
    for i in train_idx:
        x = clip_inputs(tracks[i].path, sample_rate_hz=sample_rate_hz, clips_cfg=cfg.clips, hop_s=t.hop_s,
                        max_clips=t.max_clips_per_track, featurize=featurize)
        if x is not None:
            inputs.append(x.to(device))
            kept.append(int(i))
    n_clips = sum(int(x.shape[0]) for x in inputs)
    timer.lap("load")
    say(f"{n_clips} training clips from {len(kept)} tracks ({timer.seconds['load']:.1f} s)")
    _check_enough_training_tracks(len(kept), n_tracks=len(tracks), n_heldout=len(held_idx), t=t,
                                  n_without_clips=len(train_idx) - len(kept), clips=cfg.clips)
    sim = similarity_matrix([tracks[i].features for i in kept], weights)

    crop = None
    if t.branch == "cnn" and 0 < t.crop_s < cfg.clips.clip_s:
        crop = int(round(t.crop_s * sample_rate_hz / frontend.params.hop_length))
    losses = fit(branch, inputs, sim, t, crop_frames=crop, echo=say)
    timer.lap("train")
    branch.eval()

    try:
        sha = save_branch(branch, spec, out_dir)
    except OSError as exc:
        raise ConfigError(f"cannot write the trained branch to {out_dir}: {exc}") from None
    learned = create_embedder(EmbedderConfig(name="siamese", weights_path=str(out_dir), device=t.device),
                              clip_s=cfg.clips.clip_s)
    say(f"saved {learned.key} ({parameter_count(branch)} parameters) to {out_dir}")

    evaluation = evaluate_embedders({"learned": learned, "baseline": base}, tracks, held_idx, cfg)
    timer.lap("evaluate")
    if evaluation["learned"]["heldout"]["n_queries"] == 0:
        raise ConfigError(
            f"none of the {len(held_idx)} held-out tracks gives a clip to embed (too short for clips.min_tail_s="
            f"{cfg.clips.min_tail_s} s, or undecodable), so the branch saved in {out_dir} has no evaluation and "
            "is not registered; add tracks long enough for a clip"
        )
    for gallery in ("catalogue", "heldout"):
        lm, bm = evaluation["learned"][gallery], evaluation["baseline"][gallery]
        say(f"held-out vs {gallery}: precision@5 {_fmt(lm['precision_at_5'])} (base {_fmt(bm['precision_at_5'])}), "
            f"tag similarity@5 {_fmt(lm['mean_tag_similarity_at_5'])} (base {_fmt(bm['mean_tag_similarity_at_5'])})")

    params = {
        **{f"training.{k}": v for k, v in dataclasses.asdict(t).items()},
        "clips.clip_s": cfg.clips.clip_s,
        "catalogue.path": cfg.catalogue.path,
        "n_tracks": len(tracks),
        "n_train_tracks": len(kept),
        "n_heldout_tracks": len(held_idx),
        "n_train_clips": n_clips,
        "n_parameters": parameter_count(branch),
        "device": str(device),
    }
    result = TrainingResult(
        model_dir=out_dir, embedder_key=learned.key, weights_sha256=sha, spec=spec, losses=losses,
        evaluation=evaluation, train_tracks=[tracks[i].path for i in kept],
        heldout_tracks=[tracks[i].path for i in held_idx], n_train_clips=n_clips, params=params,
        seconds=dict(timer.seconds),
    )
    # Beside the model, not in it: the split and the numbers (not part of the embedder version).
    (out_dir / "training.json").write_text(json.dumps(
        {**result.to_json(), "config": config_to_dict(cfg)}, indent=2, default=str) + "\n")
    return result


def fit(branch: torch.nn.Module, inputs: Sequence[torch.Tensor], sim: np.ndarray, t, *,
        crop_frames: int | None = None, echo: Echo | None = None) -> list[float]:
    """Train ``branch`` in place; returns the mean loss of each epoch.

    Parameters
    ----------
    branch : torch.nn.Module
        Maps a stacked batch of inputs to unit vectors.
    inputs : sequence of torch.Tensor [shape=(n_clips_i, ...)]
        Per training track, its clips' inputs (on the branch's device).
    sim : np.ndarray [shape=(n_tracks, n_tracks)]
        Metadata similarity of the training tracks.
    t : TrainingConfig
    crop_frames : int or None
        For spectrogram inputs [n_clips, bands, frames]: train on a random window of this many
        frames of each clip (an augmentation, and cheaper); ``None`` uses whole clips.
    """
    say = echo or (lambda line: None)
    if len(inputs) != sim.shape[0]:
        raise ConfigError(f"{len(inputs)} tracks of inputs for a {sim.shape[0]}-track similarity matrix")
    device = inputs[0].device
    opt = torch.optim.AdamW(branch.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(inputs) * (t.n_positive + t.n_negative) / t.batch_size)
    if t.loss == "triplet":
        steps_per_epoch = math.ceil(len(inputs) * min(t.n_positive, t.n_negative) / t.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t.epochs * steps_per_epoch))
    sizes = np.array([x.shape[0] for x in inputs])
    sims = torch.as_tensor(sim, dtype=torch.float32, device=device)
    losses = []
    branch.train()
    for epoch in range(t.epochs):
        try:
            pairs = draw_pairs(sim, seed=(t.seed, epoch), n_positive=t.n_positive, n_negative=t.n_negative, pool=t.pool)
        except ValueError as exc:  # ParameterError: too few tracks (train_similarity checks this first)
            raise ConfigError(f"{exc} (see training.n_positive, training.n_negative)") from None
        rng = np.random.default_rng((t.seed, epoch, 1))
        total, count = 0.0, 0
        if t.loss == "contrastive":
            order = rng.permutation(len(pairs))
            for at in range(0, order.size, t.batch_size):
                b = order[at : at + t.batch_size]
                ref, other = pairs.reference[b], pairs.other[b]
                c_ref, c_other = _pick_clips(ref, other, sizes, rng)
                v = branch(_gather(inputs, np.concatenate([ref, other]), np.concatenate([c_ref, c_other]),
                                   crop_frames, rng))
                d = (v[: b.size] - v[b.size :]).square().sum(dim=1).clamp_min(1e-12).sqrt()
                positive = torch.as_tensor(pairs.positive[b], device=device)
                similarity = torch.as_tensor(pairs.similarity[b], device=device)
                loss = contrastive_loss(d, positive, similarity, margin=t.margin)
                total, count = _step(opt, sched, loss, total, count, b.size)
        else:
            a, p, n = triplets(pairs)
            order = rng.permutation(a.size)
            for at in range(0, order.size, t.batch_size):
                b = order[at : at + t.batch_size]
                ca, cp = _pick_clips(a[b], p[b], sizes, rng)
                cn = rng.integers(0, sizes[n[b]])
                m = b.size
                v = branch(_gather(inputs, np.concatenate([a[b], p[b], n[b]]), np.concatenate([ca, cp, cn]),
                                   crop_frames, rng))
                d_ap = (v[:m] - v[m : 2 * m]).square().sum(dim=1).clamp_min(1e-12).sqrt()
                d_an = (v[:m] - v[2 * m :]).square().sum(dim=1).clamp_min(1e-12).sqrt()
                loss = triplet_loss(d_ap, d_an, sims[a[b], p[b]], sims[a[b], n[b]], margin=t.margin)
                total, count = _step(opt, sched, loss, total, count, m)
        losses.append(round(total / max(count, 1), 6))
        say(f"epoch {epoch + 1}/{t.epochs}: {t.loss} loss {losses[-1]:.4f}")
    return losses


def track_vectors(embedder: Embedder, paths: Sequence[str], cfg: Config) -> np.ndarray:
    """Per track, the normalised mean of its usable clip vectors (all clips if none is usable).

    Returns
    -------
    np.ndarray [shape=(len(paths), embedder.dim), dtype=float32]
        A row of zeros for a track with no clip at all, or that cannot be decoded.
    """
    out = np.zeros((len(paths), embedder.dim), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            clips = extract_track(path, embedder, cfg.clips, batch_size=cfg.embedder.batch_size)
        except AudioDecodeError:
            continue  # the embed stage records it; here it is a track without a vector
        if len(clips) == 0:
            continue
        use = clips.indexable if clips.indexable.any() else np.ones(len(clips), bool)
        v = clips.vectors[use].mean(axis=0)
        out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


def retrieval_metrics(vectors: np.ndarray, styles: Sequence[str | None], tags: Sequence[frozenset[str]],
                      queries: np.ndarray, gallery: np.ndarray, *, k: int = EVAL_K) -> dict:
    """Precision@k of same-style neighbours and mean tag Jaccard of the top k, by cosine.

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim)]
        Unit track vectors.
    styles, tags : sequence, length n
    queries, gallery : np.ndarray of int
        Track indices; a query never retrieves itself.

    Returns
    -------
    dict
        ``{"n_queries", "gallery_size", "precision_at_5", "mean_tag_similarity_at_5"}``
        (precision over queries that have a style).
    """
    precisions, tag_sims = [], []
    for q in queries:
        cands = gallery[gallery != q]
        top = cands[np.argsort(-(vectors[cands] @ vectors[q]), kind="stable")[:k]]
        if styles[q] is not None:
            precisions.append(sum(styles[j] == styles[q] for j in top) / k)
        tag_sims.append(float(np.mean([_jaccard(tags[q], tags[j]) for j in top])) if top.size else 0.0)
    return {
        "n_queries": int(len(queries)),
        "gallery_size": int(len(gallery)),
        f"precision_at_{k}": round(float(np.mean(precisions)), 4) if precisions else None,
        f"mean_tag_similarity_at_{k}": round(float(np.mean(tag_sims)), 4) if tag_sims else None,
    }


def evaluate_embedders(embedders: dict[str, Embedder], tracks: Sequence[LabelledTrack], heldout: np.ndarray,
                       cfg: Config) -> dict:
    """:func:`retrieval_metrics` of each embedder for the ``heldout`` track indices as queries, against the
    ``catalogue`` gallery (every track) and the ``heldout`` gallery (the held-out tracks only).

    Returns
    -------
    dict
        ``{name: {"catalogue": metrics, "heldout": metrics}, f"{name}_embedder": key}`` per embedder.
    """
    paths = [tr.path for tr in tracks]
    styles = [tr.style for tr in tracks]
    tags = [tr.features.get("tags", frozenset()) for tr in tracks]
    vectors = {name: track_vectors(emb, paths, cfg) for name, emb in embedders.items()}
    # Tracks without a vector under any embedder (no usable clip, undecodable) take no part.
    usable = np.all([np.linalg.norm(v, axis=1) > 0 for v in vectors.values()], axis=0)
    everything = np.flatnonzero(usable)
    queries = np.asarray([q for q in heldout if usable[q]], dtype=np.int64)
    out: dict = {}
    for name, emb in embedders.items():
        out[name] = {
            "catalogue": retrieval_metrics(vectors[name], styles, tags, queries, everything),
            "heldout": retrieval_metrics(vectors[name], styles, tags, queries, queries),
        }
        out[f"{name}_embedder"] = emb.key
    return out


# --------------------------------------------------------------------------- helpers


def _base_config(cfg: Config) -> EmbedderConfig:
    """The base embedder's settings: ``cfg.embedder``'s when it names it, else its defaults.

    Raises
    ------
    ConfigError
        ``training.base_embedder`` is no embedder, is ``siamese``, or needs weights while
        ``embedder.name`` is another embedder (whose ``weights_path`` it would not read).
    """
    name = cfg.training.base_embedder
    if name == "siamese":
        raise ConfigError("training.base_embedder cannot be siamese; use mel (or a pre-trained model such as clap)")
    if name not in available_embedders():
        raise ConfigError(f"training.base_embedder {name!r} is not an embedder; set training.base_embedder to one of "
                          f"{', '.join(n for n in available_embedders() if n != 'siamese')}")
    if cfg.embedder.name == name:
        return dataclasses.replace(cfg.embedder, device=cfg.training.device)
    if uses_weights(name):
        unused = (f", so embedder.weights_path={cfg.embedder.weights_path} is not read"
                  if cfg.embedder.weights_path else "")
        raise ConfigError(
            f"training.base_embedder={name} needs its model files: the base embedder takes embedder.weights_path "
            f"and embedder.options only when embedder.name is {name} too, and embedder.name is "
            f"{cfg.embedder.name}{unused}; set embedder.name={name} and embedder.weights_path=<the {name} model directory>"
        )
    return EmbedderConfig(name=name, device=cfg.training.device)


def _absolute(path: str | None) -> str | None:
    """``path`` made absolute (``siamese.json`` is read from other working directories); symlinks are kept,
    so a link such as ``models/current`` still follows its target."""
    return os.path.abspath(Path(path).expanduser()) if path else path


def _usable_output_dir(cfg: Config) -> Path:
    """``training.output_dir`` (default ``<workdir>/models/siamese``), refused if it cannot hold the model.

    Checked, not created: a run refused later (no metadata, too few tracks) leaves nothing
    behind; :func:`save_branch` creates it. Where it does not exist yet, its nearest existing
    ancestor must be a writable directory.
    """
    t = cfg.training
    out_dir = Path(t.output_dir).expanduser() if t.output_dir else cfg.workpath("models", "siamese")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"training.output_dir {out_dir} is a file, not a directory; choose another --output-dir")
    existing = out_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot create training.output_dir {out_dir}: {existing} is a file, not a directory; "
                          "choose another --output-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == out_dir else f" ({existing} is not)"
        raise ConfigError(f"training.output_dir {out_dir} is not writable{where}; choose another --output-dir")
    return out_dir


def _check_heldout(tracks: Sequence[LabelledTrack], held_idx: np.ndarray, t) -> None:
    """Refuse a split with nothing held out: the run would have no metrics to judge (or register) it by."""
    if len(held_idx):
        return
    per_style = Counter(tr.style for tr in tracks)
    if max(per_style.values()) < 2:
        why = (f"each of its {len(per_style)} styles has a single track, and a style's only track stays in "
               "training so that training sees every style")
        need = "at least two tracks of some style (the sidecar's 'style' field)"
    else:
        why = f"its motif groups are larger than any style's share of training.heldout_fraction={t.heldout_fraction}"
        need = "a higher training.heldout_fraction, or more tracks per style"
    raise ConfigError(
        f"no track of the {len(tracks)} with metadata can be held out for evaluation: {why}. A model without "
        f"held-out tracks has no metrics to judge it by, so nothing is trained; needed: {need}"
    )


def _check_enough_training_tracks(n_train: int, *, n_tracks: int, n_heldout: int, t, n_without_clips: int = 0,
                                  clips=None) -> None:
    """Refuse, before training, too few training tracks for the pair rule, saying why and what would do."""
    need = min_tracks_for_pairs(t.n_positive, t.n_negative)
    if n_train >= need:
        return
    if n_train == 0 and n_without_clips:
        raise ConfigError(
            f"none of the {n_without_clips} training tracks gives a usable clip (clips.clip_s={clips.clip_s} s; a "
            f"track shorter than that gives one only if it lasts clips.min_tail_s={clips.min_tail_s} s; silent, "
            "noise-like and undecodable audio gives none), so there is nothing to train on; use longer tracks, "
            "or lower clips.clip_s and clips.min_tail_s"
        )
    counts = f"{n_tracks} tracks have metadata, {n_heldout} of them held out for evaluation"
    if n_without_clips:
        counts += f", and {n_without_clips} training tracks give no usable clip"
    advice = []
    # The split holds out at most round(fraction * n) tracks and at least one.
    spare = n_tracks - n_without_clips - need
    if n_heldout > 1 and spare >= 1:
        # Rounded down to 3 significant digits, so round(fraction * n) never exceeds `spare`.
        scale = 10 ** (2 - math.floor(math.log10(spare / n_tracks)))
        fraction = math.floor(spare / n_tracks * scale) / scale
        advice.append(f"set training.heldout_fraction={fraction:g} (holds out at most {spare})")
    most = (n_train - 1) // 2
    if most >= 1:
        advice.append(f"lower training.n_positive to {most + 1} and training.n_negative to {most}")
    advice.append(f"add tracks (at least {need + 1 + n_without_clips} with metadata and usable clips)")
    raise ConfigError(
        f"{n_train} training tracks are too few for the pair rule: each track needs {t.n_positive - 1} similar and "
        f"{t.n_negative} dissimilar partners (training.n_positive={t.n_positive}, training.n_negative="
        f"{t.n_negative}) from disjoint pools, so at least {need} training tracks; {counts}. To train: "
        + ", or ".join(advice)
    )


def _pick_clips(ref: np.ndarray, other: np.ndarray, sizes: np.ndarray, rng: np.random.Generator):
    """A random clip on each side; a track paired with itself gets two different clips when it has two."""
    c_ref = rng.integers(0, sizes[ref])
    c_other = rng.integers(0, sizes[other])
    same = (ref == other) & (sizes[ref] > 1)
    # Another clip of the same track: shift by 1..size-1, modulo the size.
    c_other[same] = (c_ref[same] + rng.integers(1, sizes[ref[same]])) % sizes[ref[same]]
    return c_ref, c_other


def _gather(inputs: Sequence[torch.Tensor], track: np.ndarray, clip: np.ndarray, crop_frames: int | None,
            rng: np.random.Generator) -> torch.Tensor:
    """The inputs of (track, clip) pairs, stacked; spectrograms cropped to ``crop_frames`` at random offsets."""
    items = [inputs[i][c] for i, c in zip(track.tolist(), clip.tolist())]
    if crop_frames is not None and items[0].ndim == 2 and items[0].shape[1] > crop_frames:
        starts = rng.integers(0, items[0].shape[1] - crop_frames + 1, size=len(items))
        items = [x[:, a : a + crop_frames] for x, a in zip(items, starts.tolist())]
    return torch.stack(items)


def _step(opt, sched, loss: torch.Tensor, total: float, count: int, n: int) -> tuple[float, int]:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return total + float(loss.detach()) * n, count + n


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 2)
        self._last = now
