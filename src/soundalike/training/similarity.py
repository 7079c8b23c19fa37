"""Ground truth from metadata: a track × track similarity and the pairs trained on.

The similarity of two tracks is a weighted mean of Jaccard indices over four groups of
descriptive features taken from the catalogue sidecar (:func:`track_features`):

=============  ===========================================================  ======
group          features                                                     weight
=============  ===========================================================  ======
tags           the entry's ``tags`` plus its ``style``                      0.5
instruments    ``instruments``                                              0.2
tempo          the tempo band of ``tempo_bpm``: slow < 90 <= medium < 130    0.2
               <= fast (the sample generator's bands)
key            ``key`` (``"A minor"``)                                      0.1
=============  ===========================================================  ======

.. math::

    s(a, b) = \\frac{\\sum_g w_g\\, |A_g \\cap B_g| / |A_g \\cup B_g|}{\\sum_g w_g}

where the sums run over the groups that at least one of the two tracks has (a catalogue
without keys is not penalised for it; a group only one track has counts 0). ``s`` is symmetric,
in [0, 1], and 1 on the diagonal. The weights are :class:`~soundalike.config.TrainingConfig`
settings.

Pairs follow the reference method (:func:`draw_pairs`): every track is the reference of
``n_positive`` positive pairs -- itself (another clip of it) and ``n_positive - 1`` tracks drawn
from its ``pool`` most similar -- and of ``n_negative`` negative pairs drawn from its ``pool``
least similar. Ties in similarity are broken at random (seeded), not by catalogue order.

Examples
--------
>>> a = {"style": "ambient_pad", "tags": ["calm", "synth"], "tempo_bpm": 70, "key": "C major"}
>>> b = {"style": "piano_arpeggio", "tags": ["calm", "piano"], "tempo_bpm": 80, "key": "C major"}
>>> sim = similarity_matrix([track_features(a), track_features(b)], SimilarityWeights())
>>> round(float(sim[0, 1]), 3)  # tags 1/5, tempo 1, key 1; no instruments: (0.5/5 + 0.2 + 0.1) / 0.8
0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from soundalike.catalogue import sidecar_tags
from soundalike.errors import ParameterError

#: Feature groups, in the order of :class:`SimilarityWeights`.
GROUPS: tuple[str, ...] = ("tags", "instruments", "tempo", "key")

#: Upper edges of the slow and medium tempo bands, beats per minute.
TEMPO_BANDS_BPM = (90.0, 130.0)


@dataclass(frozen=True)
class SimilarityWeights:
    """Weight of each feature group's Jaccard index in the metadata similarity."""

    tags: float = 0.5
    instruments: float = 0.2
    tempo: float = 0.2
    key: float = 0.1

    def __post_init__(self) -> None:
        values = [getattr(self, g) for g in GROUPS]
        if min(values) < 0 or sum(values) <= 0:
            raise ParameterError(f"similarity weights must be >= 0 and not all 0, got {self}")


def tempo_band(tempo_bpm: float) -> str:
    """``"slow"``, ``"medium"`` or ``"fast"`` (:data:`TEMPO_BANDS_BPM`)."""
    slow, medium = TEMPO_BANDS_BPM
    return "slow" if tempo_bpm < slow else "medium" if tempo_bpm < medium else "fast"


def track_features(entry: dict) -> dict[str, frozenset[str]]:
    """The descriptive feature sets of one sidecar entry, by group (missing groups are absent).

    Parameters
    ----------
    entry : dict
        A sidecar entry (:func:`soundalike.catalogue.read_sidecar`): ``tags`` (list or a comma
        separated string), ``style``, ``instruments``, ``tempo_bpm`` (or ``tempo``), ``key``.
    """
    out: dict[str, frozenset[str]] = {}
    tags = frozenset(t.strip().lower() for t in sidecar_tags(entry) if t.strip())
    if tags:
        out["tags"] = tags
    instruments = entry.get("instruments") or []
    if isinstance(instruments, str):
        instruments = instruments.replace(";", ",").split(",")
    instruments = frozenset(str(i).strip().lower() for i in instruments if str(i).strip())
    if instruments:
        out["instruments"] = instruments
    tempo = entry.get("tempo_bpm", entry.get("tempo"))
    try:
        if tempo is not None and float(tempo) > 0:
            out["tempo"] = frozenset([tempo_band(float(tempo))])
    except (TypeError, ValueError):
        pass  # an unreadable tempo is a missing one
    key = entry.get("key")
    if key and str(key).strip():
        out["key"] = frozenset([str(key).strip().lower()])
    return out


def similarity_matrix(features: Sequence[dict[str, frozenset[str]]], weights: SimilarityWeights) -> np.ndarray:
    """Metadata similarity of every pair of tracks (the module docstring's ``s``).

    Parameters
    ----------
    features : sequence of dict
        :func:`track_features` of each track.
    weights : SimilarityWeights

    Returns
    -------
    np.ndarray [shape=(n, n), dtype=float64]
        Symmetric, in [0, 1]; 1 on the diagonal (and for tracks with identical features); 0
        between two tracks that have no group at all.
    """
    n = len(features)
    num = np.zeros((n, n))
    den = np.zeros((n, n))
    for group in GROUPS:
        w = getattr(weights, group)
        if w == 0:
            continue
        vocab = sorted({f for feats in features for f in feats.get(group, ())})
        has = np.array([group in feats for feats in features])
        either = has[:, None] | has[None, :]
        den += w * either
        if not vocab:
            continue
        index = {f: k for k, f in enumerate(vocab)}
        m = np.zeros((n, len(vocab)))
        for i, feats in enumerate(features):
            m[i, [index[f] for f in feats.get(group, ())]] = 1.0
        inter = m @ m.T
        sizes = m.sum(axis=1)
        union = sizes[:, None] + sizes[None, :] - inter
        num += w * np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    sim = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    np.fill_diagonal(sim, 1.0)
    return sim


def neighbour_pools(sim: np.ndarray, *, pool: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each track's ``pool`` most and ``pool`` least similar other tracks.

    Parameters
    ----------
    sim : np.ndarray [shape=(n, n)]
        :func:`similarity_matrix`.
    pool : int
        Pool size; shrunk to ``(n - 1) // 2`` on small catalogues so the two pools never overlap.
    rng : np.random.Generator
        Breaks ties in similarity.

    Returns
    -------
    most, least : np.ndarray [shape=(n, k), dtype=int64]
        Track indices, most similar first and least similar first; never the track itself.
    """
    n = sim.shape[0]
    k = min(pool, (n - 1) // 2)
    most = np.zeros((n, k), dtype=np.int64)
    least = np.zeros((n, k), dtype=np.int64)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        tie_break = rng.random(others.size)
        order = others[np.lexsort((tie_break, -sim[i, others]))]  # most similar first
        most[i] = order[:k]
        least[i] = order[::-1][:k]
    return most, least


@dataclass(frozen=True)
class Pairs:
    """Training pairs; track indices refer to the matrix they were drawn from.

    Attributes
    ----------
    reference, other : np.ndarray [shape=(m,), dtype=int64]
    positive : np.ndarray [shape=(m,), dtype=bool]
    similarity : np.ndarray [shape=(m,), dtype=float32]
        Metadata similarity of the pair (1 for a track with itself).
    """

    reference: np.ndarray
    other: np.ndarray
    positive: np.ndarray
    similarity: np.ndarray

    def __len__(self) -> int:
        return int(self.reference.shape[0])


def min_tracks_for_pairs(n_positive: int, n_negative: int) -> int:
    """The fewest training tracks :func:`draw_pairs` can draw from: each track needs
    ``n_positive - 1`` similar and ``n_negative`` dissimilar partners from disjoint pools."""
    return 2 * max(n_positive - 1, n_negative) + 1


def draw_pairs(
    sim: np.ndarray,
    *,
    seed: int | Sequence[int],
    n_positive: int = 5,
    n_negative: int = 5,
    pool: int = 10,
) -> Pairs:
    """Draw the positive and negative pairs of every reference track (see the module docstring).

    Parameters
    ----------
    sim : np.ndarray [shape=(n, n)]
        :func:`similarity_matrix` of the training tracks.
    seed : int or sequence of int
        Same seed, same pairs (``(seed, epoch)`` gives each epoch its own draw).
    n_positive, n_negative : int
        Pairs per reference; the first positive is the track with itself.
    pool : int
        Size of the most/least similar pools (see :func:`neighbour_pools`).

    Returns
    -------
    Pairs
        ``n * (n_positive + n_negative)`` pairs, grouped by reference: its positives, then its
        negatives.

    Raises
    ------
    ParameterError
        Too few tracks for the pools to hold ``n_positive - 1`` and ``n_negative`` tracks.
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ParameterError(f"sim must be a square matrix, got shape {sim.shape}")
    if n_positive < 1 or n_negative < 0:
        raise ParameterError(f"need n_positive >= 1 and n_negative >= 0, got {n_positive}, {n_negative}")
    n = sim.shape[0]
    k = min(pool, (n - 1) // 2)
    if k < max(n_positive - 1, n_negative):
        need = min_tracks_for_pairs(n_positive, n_negative)
        raise ParameterError(
            f"{n} training tracks are too few for {n_positive - 1} similar and {n_negative} dissimilar "
            f"partners per track from disjoint pools; need at least {need} tracks with metadata"
        )
    rng = np.random.default_rng(seed)
    most, least = neighbour_pools(sim, pool=pool, rng=rng)
    ref, other, positive = [], [], []
    for i in range(n):
        similar = rng.choice(most[i], n_positive - 1, replace=False)
        dissimilar = rng.choice(least[i], n_negative, replace=False)
        partners = [i, *similar, *dissimilar]
        ref += [i] * len(partners)
        other += partners
        positive += [True] * n_positive + [False] * n_negative
    ref_a, other_a = np.asarray(ref, dtype=np.int64), np.asarray(other, dtype=np.int64)
    return Pairs(ref_a, other_a, np.asarray(positive, dtype=bool), sim[ref_a, other_a].astype(np.float32))


def triplets(pairs: Pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor, positive, negative) index triplets: each reference's positives zipped with its negatives.

    Returns
    -------
    anchor, positive, negative : np.ndarray [shape=(t,), dtype=int64]
    """
    anchors, pos, neg = [], [], []
    for i in np.unique(pairs.reference):
        mine = pairs.reference == i
        p = pairs.other[mine & pairs.positive]
        q = pairs.other[mine & ~pairs.positive]
        m = min(p.size, q.size)
        anchors += [i] * m
        pos += list(p[:m])
        neg += list(q[:m])
    return (np.asarray(anchors, dtype=np.int64), np.asarray(pos, dtype=np.int64), np.asarray(neg, dtype=np.int64))
