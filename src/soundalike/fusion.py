"""Query fusion: per-clip nearest neighbours → one ranked list of songs.

The reference method. A query is cut into clips like the catalogue; each query clip fetches its
``top_k`` nearest catalogue clips. For every candidate song:

- ``votes`` = number of (query clip, catalogue clip) matches that belong to it;
- ``total_similarity`` = sum of those matches' cosine similarities;
- ``vote_score`` and ``similarity_score`` = each divided by the best song's value;
- ``combined = vote_weight * vote_score + (1 - vote_weight) * similarity_score``.

Songs are ranked by ``combined``, ties broken by ``total_similarity``, then ``votes``, then
``track_id``, so the order is deterministic. The best song scores 1.0 whenever it leads both in
votes and in similarity (the usual case; otherwise the leader's score is below 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from soundalike.errors import ParameterError


@dataclass(frozen=True)
class Match:
    """One (query clip, catalogue clip) pair behind a song's score."""

    query_start_s: float
    clip_start_s: float
    clip_idx: int
    similarity: float

    @property
    def distance(self) -> float:
        """Cosine distance, ``1 - similarity``, never below 0 (float32 inner products of unit
        vectors can exceed 1 by a rounding step; a clip matching itself would read ``-0.000``)."""
        return max(0.0, 1.0 - self.similarity)


@dataclass(frozen=True)
class SongResult:
    """One ranked song."""

    rank: int
    track_id: str
    combined_score: float
    votes: int
    total_similarity: float
    vote_score: float
    similarity_score: float
    evidence: tuple[Match, ...] = field(default=())

    def to_json(self) -> dict:
        out = asdict(self)
        out["evidence"] = [
            {**asdict(m), "distance": round(m.distance, 6), "similarity": round(m.similarity, 6)}
            for m in self.evidence
        ]
        out["combined_score"] = round(self.combined_score, 6)
        out["total_similarity"] = round(self.total_similarity, 6)
        out["vote_score"] = round(self.vote_score, 6)
        out["similarity_score"] = round(self.similarity_score, 6)
        return out


def fuse(
    query_start_s: np.ndarray,
    similarities: np.ndarray,
    track_ids: np.ndarray,
    clip_start_s: np.ndarray,
    clip_idx: np.ndarray,
    *,
    max_results: int = 10,
    vote_weight: float = 0.2,
    exclude_track_ids: Iterable[str] = (),
) -> list[SongResult]:
    """Fuse per-clip neighbours into ranked songs.

    Parameters
    ----------
    query_start_s : np.ndarray [shape=(q,)]
        Start of each query clip in the query, seconds.
    similarities : np.ndarray [shape=(q, k)]
        Cosine similarity of each query clip's k neighbours; ``-inf``/NaN marks a missing one.
    track_ids : np.ndarray [shape=(q, k), dtype=object]
        Track id of each neighbour (``None`` for missing ones).
    clip_start_s, clip_idx : np.ndarray [shape=(q, k)]
        Where each neighbour clip starts in its track, and its clip number.
    max_results : int
        Songs returned.
    vote_weight : float
        Weight of the vote score in [0, 1]; similarity gets ``1 - vote_weight``.
    exclude_track_ids : iterable of str
        Songs never returned (e.g. the query's own track).
    """
    if max_results < 1:
        raise ParameterError(f"max_results must be >= 1, got {max_results}")
    if not 0.0 <= vote_weight <= 1.0:
        raise ParameterError(f"vote_weight must be in [0, 1], got {vote_weight}")
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 2 or np.asarray(track_ids).shape != sims.shape:
        raise ParameterError(f"similarities and track_ids must both be (q, k), got {sims.shape} and {np.asarray(track_ids).shape}")
    excluded = set(exclude_track_ids)

    votes: dict[str, int] = {}
    totals: dict[str, float] = {}
    evidence: dict[str, list[Match]] = {}
    for qi in range(sims.shape[0]):
        for ki in range(sims.shape[1]):
            tid = track_ids[qi][ki]
            sim = sims[qi, ki]
            if tid is None or not np.isfinite(sim) or tid in excluded:
                continue
            votes[tid] = votes.get(tid, 0) + 1
            totals[tid] = totals.get(tid, 0.0) + float(sim)
            evidence.setdefault(tid, []).append(
                Match(float(query_start_s[qi]), float(clip_start_s[qi][ki]), int(clip_idx[qi][ki]), float(sim))
            )
    if not votes:
        return []
    best_votes = max(votes.values())
    best_total = max(totals.values())
    scored = []
    for tid in votes:
        vote_score = votes[tid] / best_votes
        sim_score = totals[tid] / best_total if best_total > 0 else 0.0
        combined = vote_weight * vote_score + (1.0 - vote_weight) * sim_score
        scored.append((tid, combined, vote_score, sim_score))
    scored.sort(key=lambda s: (-s[1], -totals[s[0]], -votes[s[0]], s[0]))
    results = []
    for rank, (tid, combined, vote_score, sim_score) in enumerate(scored[:max_results], start=1):
        matches = sorted(evidence[tid], key=lambda m: (m.query_start_s, -m.similarity, m.clip_start_s))
        results.append(
            SongResult(
                rank=rank,
                track_id=tid,
                combined_score=float(combined),
                votes=votes[tid],
                total_similarity=float(totals[tid]),
                vote_score=float(vote_score),
                similarity_score=float(sim_score),
                evidence=tuple(matches),
            )
        )
    return results


def results_to_json(results: Sequence[SongResult]) -> list[dict]:
    return [r.to_json() for r in results]


def fuse_fingerprint(songs: Sequence[dict], matches: Sequence, *, max_results: int, weight: float = 1.0) -> list[dict]:
    """Put songs identified by their landmarks first; every song gets a ``match`` field.

    Parameters
    ----------
    songs : sequence of dict
        Ranked songs as :meth:`SongResult.to_json` gives them (embedding evidence).
    matches : sequence of :class:`~soundalike.fingerprint.FingerprintMatch`
        Fingerprint matches of the same query, best first.
    max_results : int
    weight : float
        > 0: confident matches lead, ordered by aligned hits (time-consistent evidence beats
        similar sound); 0: matches are only reported.

    Returns
    -------
    list of dict
        Re-ranked songs (``rank`` renumbered). ``match`` is ``None`` or ``{offset_s,
        aligned_hits, query_hashes, hit_ratio, peak_share, speed, confident}``. A confident match the
        embedding did not retrieve is added with zero votes and similarity.
    """
    by_id = {m.track_id: m for m in matches}
    out = [{**s, "match": by_id[s["track_id"]].to_json() if s["track_id"] in by_id else None} for s in songs]
    known = {s["track_id"] for s in songs}
    for m in matches:
        if m.confident and m.track_id not in known:
            out.append({"rank": 0, "track_id": m.track_id, "combined_score": 0.0, "votes": 0, "total_similarity": 0.0,
                        "vote_score": 0.0, "similarity_score": 0.0, "evidence": [], "match": m.to_json()})
    if weight > 0:
        def key(item):
            pos, s = item
            m = s["match"]
            if m is not None and m["confident"]:
                return (0, -m["aligned_hits"], pos)
            return (1, 0, pos)
        out = [s for _, s in sorted(enumerate(out), key=key)]
    out = out[:max_results]
    for rank, s in enumerate(out, start=1):
        s["rank"] = rank
    return out
