"""Training data: the catalogue's tracks with metadata, their split, and their clips' inputs.

Tracks come from the catalogue sidecar (:func:`soundalike.catalogue.read_sidecar`): every
entry whose file exists is a track, identified by its resolved path. Clips are cut by the same
functions the embed stage uses (:func:`soundalike.audio.load_audio`,
:func:`soundalike.clips.chunk`, :func:`soundalike.flags.clip_flags`), with ``training.hop_s``
in place of ``clips.hop_s``; silent and applause-like clips are left out, as the index leaves
them out.

The split is by track, never by clip, and keeps each motif group (alternate takes of one
melody) on one side, so no held-out track has a near-copy among the training tracks. It is
stratified by style where the sidecar has styles, so both sides see every style.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from soundalike.audio import load_audio
from soundalike.catalogue import read_sidecar
from soundalike.clips import chunk
from soundalike.config import ClipsConfig
from soundalike.errors import ConfigError, SoundalikeError
from soundalike.flags import clip_flags
from soundalike.training.similarity import track_features


@dataclass(frozen=True)
class LabelledTrack:
    """A catalogue file with its sidecar metadata.

    Attributes
    ----------
    path : str
        Absolute path of the audio file.
    entry : dict
        Its sidecar entry.
    features : dict[str, frozenset[str]]
        :func:`~soundalike.training.similarity.track_features` of ``entry``.
    """

    path: str
    entry: dict
    features: dict

    @property
    def style(self) -> str | None:
        style = self.entry.get("style")
        return str(style) if style else None

    @property
    def group(self) -> str:
        """What the split keeps together: the motif group, or the track alone."""
        motif = self.entry.get("motif_id")
        return f"motif:{motif}" if motif else f"track:{self.path}"


def labelled_tracks(catalogue_path: str | os.PathLike, metadata_file: str) -> list[LabelledTrack]:
    """The tracks of a catalogue that have metadata, sorted by path.

    Raises
    ------
    ConfigError
        No sidecar, or no entry that names an existing file with some descriptive metadata.
    """
    sidecar = read_sidecar(catalogue_path, metadata_file)
    if not sidecar:
        raise ConfigError(
            f"no metadata sidecar {Path(catalogue_path) / metadata_file}: training needs tags per track "
            "(set catalogue.path and catalogue.metadata_file)"
        )
    tracks = []
    for path in sorted(sidecar):
        features = track_features(sidecar[path])
        if Path(path).is_file() and features:
            tracks.append(LabelledTrack(path=path, entry=sidecar[path], features=features))
    if not tracks:
        raise ConfigError(f"no entry of {Path(catalogue_path) / metadata_file} names an existing file with tags")
    return tracks


def split_tracks(
    tracks: Sequence[LabelledTrack], *, heldout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of track indices into ``(train, heldout)``, by motif group, stratified by style.

    The catalogue holds out ``round(heldout_fraction * n)`` tracks (at least one), shared out
    over the styles in proportion to their sizes (largest remainders first, ties at random); a
    style never gives up its last training track (:func:`heldout_quotas`). Groups are then
    visited in a seeded random order and held out while every style they contain is still under
    its quota, so fewer tracks may be held out when motif groups are large, never more.

    Returns
    -------
    train, heldout : np.ndarray [dtype=int64]
        Sorted, disjoint, covering every track. ``heldout`` is empty when no style has two tracks.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tracks):
        groups[t.group].append(i)
    per_style: dict[str | None, int] = defaultdict(int)
    for t in tracks:
        per_style[t.style] += 1
    rng = np.random.default_rng(seed)
    quota = heldout_quotas(per_style, heldout_fraction=heldout_fraction, rng=rng)
    taken: dict[str | None, int] = defaultdict(int)
    heldout: list[int] = []
    names = sorted(groups)
    for g in (names[k] for k in rng.permutation(len(names))):
        counts: dict[str | None, int] = defaultdict(int)
        for i in groups[g]:
            counts[tracks[i].style] += 1
        if all(taken[s] + c <= quota[s] for s, c in counts.items()):
            heldout += groups[g]
            for s, c in counts.items():
                taken[s] += c
    held = np.array(sorted(heldout), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(tracks)), held).astype(np.int64)
    return train, held


def heldout_quotas(per_style: dict[str | None, int], *, heldout_fraction: float,
                   rng: np.random.Generator) -> dict[str | None, int]:
    """Tracks to hold out per style: ``max(1, round(heldout_fraction * n))`` in all, by largest remainder.

    Each style gets the whole part of its share, then the styles with the largest fractional
    parts (ties broken by ``rng``) one more each until the total is reached; no style gives up
    all its tracks, so a style of one track holds out none.
    """
    styles = sorted(per_style, key=lambda s: (s is None, str(s)))
    n = sum(per_style.values())
    target = min(max(1, round(heldout_fraction * n)), n) if n else 0
    share = {s: heldout_fraction * per_style[s] for s in styles}
    quota = {s: min(per_style[s] - 1, int(np.floor(share[s]))) for s in styles}
    tie_break = dict(zip(styles, rng.random(len(styles))))
    order = sorted(styles, key=lambda s: (-(share[s] - np.floor(share[s])), tie_break[s]))
    while sum(quota.values()) < target:
        room = [s for s in order if quota[s] < per_style[s] - 1]
        if not room:
            break
        for s in room[: target - sum(quota.values())]:
            quota[s] += 1
    return quota


def clip_inputs(
    path: str,
    *,
    sample_rate_hz: int,
    clips_cfg: ClipsConfig,
    hop_s: float,
    max_clips: int,
    featurize: Callable[[np.ndarray], torch.Tensor],
) -> torch.Tensor | None:
    """The model inputs of one track's usable clips, or ``None`` when it has none.

    Parameters
    ----------
    path : str
    sample_rate_hz : int
        Decode rate (the branch's).
    clips_cfg : ClipsConfig
        ``clip_s``, ``min_tail_s`` and the flag thresholds.
    hop_s : float
        Distance between training clip starts, seconds.
    max_clips : int
        Evenly spaced subset when the track has more usable clips.
    featurize : callable
        Clip waves float32 [n, clip_samples] -> inputs [n, ...] (log-mel, or base vectors).

    Returns
    -------
    torch.Tensor [shape=(n_clips, ...)] or None
        ``None`` also for a file that cannot be decoded (the embed stage records those).
    """
    try:
        wave = load_audio(path, sample_rate_hz)
    except SoundalikeError:
        return None
    clips = chunk(wave, sample_rate_hz, clip_s=clips_cfg.clip_s, hop_s=hop_s, min_tail_s=clips_cfg.min_tail_s)
    if len(clips) == 0:
        return None
    real = np.round((clips.end_s - clips.start_s) * sample_rate_hz).astype(np.int64)
    flags = clip_flags(clips.audio, sample_rate_hz, silence_rms_db=clips_cfg.silence_rms_db,
                       noise_flatness=clips_cfg.noise_flatness, noise_tonality_max=clips_cfg.noise_tonality_max,
                       real_samples=real)
    keep = np.flatnonzero(~(flags.is_silent | flags.is_noise))
    if keep.size == 0:
        return None
    if keep.size > max_clips:
        keep = keep[np.round(np.linspace(0, keep.size - 1, max_clips)).astype(int)]
    return featurize(clips.audio[keep])


def batched(featurize: Callable[[np.ndarray], torch.Tensor], batch: int = 32) -> Callable[[np.ndarray], torch.Tensor]:
    """``featurize`` applied ``batch`` clips at a time (bounded memory for long tracks)."""

    def run(audio: np.ndarray) -> torch.Tensor:
        return torch.cat([featurize(audio[i : i + batch]) for i in range(0, audio.shape[0], batch)])

    return run

