"""Retrieval evaluation: how well does an index find what it should?

Three measures, all seeded and reproducible:

- **excerpts**: N excerpts of 10–30 s at random offsets that are not multiples of the clip hop,
  each through one degradation (:data:`soundalike.degrade.DEGRADATIONS`), queried like an upload;
  top-1 and top-10 accuracy of the source track and MRR, overall and per degradation;
- **tags**: precision@5 of neighbours sharing the query's style (the query track excluded),
  when the catalogue's sidecar has styles;
- **versions**: MRR of another take of the same motif (``motif_id`` in the sidecar).

:func:`evaluate` needs only a :class:`~soundalike.search.Searcher` and the track list, so the
same code evaluates in a test, from the CLI, or in the Databricks job.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from soundalike import degrade
from soundalike.audio import load_audio
from soundalike.errors import ParameterError, SoundalikeError

EXCERPT_SR = 44100
#: Excerpt queries are 10-30 s long and end at least 1 s before their source's end.
MIN_EXCERPT_S, MAX_EXCERPT_S = 10.0, 30.0


@dataclass(frozen=True)
class EvalTrack:
    """A catalogue track as the evaluation sees it."""

    track_id: str
    path: str
    duration_s: float
    style: str | None = None
    motif_id: str | None = None


@dataclass(frozen=True)
class ExcerptQuery:
    track_id: str
    path: str
    offset_s: float
    duration_s: float
    degradation: str


def plan_excerpts(
    tracks: Sequence[EvalTrack],
    n: int,
    *,
    seed: int,
    hop_s: float,
    min_s: float = MIN_EXCERPT_S,
    max_s: float = MAX_EXCERPT_S,
    degradations: Sequence[str] = tuple(degrade.DEGRADATIONS),
) -> list[ExcerptQuery]:
    """``n`` excerpt queries cycling through ``degradations``, offsets off the clip grid.

    Raises
    ------
    ParameterError
        No track is long enough to cut an excerpt from (:func:`excerpts_skip_reason`).
    """
    reason = excerpts_skip_reason(tracks, min_s=min_s)
    if reason:
        raise ParameterError(reason)
    usable = [t for t in tracks if t.duration_s >= min_s + 1.0]
    rng = np.random.default_rng(seed)
    plan = []
    for i in range(n):
        track = usable[int(rng.integers(len(usable)))]
        length = float(min(rng.uniform(min_s, max_s), track.duration_s - 1.0))
        offset = 0.0
        for _ in range(100):  # an offset at least 10 % of a hop away from every clip start
            offset = float(rng.uniform(0.0, track.duration_s - length))
            phase = (offset / hop_s) % 1.0
            if 0.1 <= phase <= 0.9:
                break
        plan.append(ExcerptQuery(track.track_id, track.path, round(offset, 3), round(length, 3),
                                 degradations[i % len(degradations)]))
    return plan


def excerpts_skip_reason(tracks: Sequence[EvalTrack], *, min_s: float = MIN_EXCERPT_S) -> str | None:
    """Why no excerpt can be cut from ``tracks`` (none is ``min_s`` + 1 s long), or ``None``."""
    if any(t.duration_s >= min_s + 1.0 for t in tracks):
        return None
    longest = max((t.duration_s for t in tracks), default=0.0)
    return (f"no track is longer than {min_s + 1.0:g} s (longest: {longest:.1f} s, {len(tracks)} tracks): "
            f"nothing to cut {min_s:g}-{MAX_EXCERPT_S:g} s excerpts from")


def reciprocal_rank(results: Sequence[dict], wanted: set[str]) -> float:
    """1 / rank of the first result whose track_id is in ``wanted``; 0 if absent."""
    for result in results:
        if result["track_id"] in wanted:
            return 1.0 / result["rank"]
    return 0.0


def evaluate(
    search: Callable[..., dict],
    tracks: Sequence[EvalTrack],
    *,
    n_excerpts: int = 120,
    seed: int = 0,
    hop_s: float = 10.0,
    progress: bool = True,
    excerpts_only: bool = False,
) -> dict:
    """Run the three measures with ``search(bytes, **params) -> {"results": [...]}``.

    ``excerpts_only`` skips the tag and version measures (``None`` in the summary). When no
    track is long enough for an excerpt (a catalogue of short tracks), the excerpt measure is
    skipped, not failed: ``n`` 0, and ``excerpts["skipped"]`` says why.

    Returns
    -------
    dict
        ``{"excerpts": {"overall": {...}, "by_degradation": {name: {...}}}, "tags": {...} | None,
        "versions": {...} | None, "queries": [...]}`` where each ``{...}`` holds ``n``,
        ``top1``, ``top10`` and ``mrr`` (tags: ``precision_at_5``); per degradation also
        ``offset_within_1s`` when the results carry fingerprint matches.
    """
    rng = np.random.default_rng(seed + 1)
    skipped = excerpts_skip_reason(tracks)
    plan = [] if skipped else plan_excerpts(tracks, n_excerpts, seed=seed, hop_s=hop_s)
    by_degradation: dict[str, list[float]] = defaultdict(list)
    offset_errors: dict[str, list[float | None]] = defaultdict(list)
    queries = []
    for q in tqdm(plan, desc="excerpt queries", unit="query", disable=not progress or not plan):
        wave = load_audio(q.path, EXCERPT_SR, offset_s=q.offset_s, duration_s=q.duration_s)
        wave, sr = degrade.apply(q.degradation, wave, EXCERPT_SR, rng=rng)
        data = degrade.encode(wave, sr, "wav")
        record = asdict(q)
        try:
            results = search(data, max_results=10)["results"]
        except SoundalikeError as exc:  # a failed query counts as a miss, and says why
            results = []
            record["error"] = str(exc)
        rr = reciprocal_rank(results, {q.track_id})
        by_degradation[q.degradation].append(rr)
        # With a fingerprint index the top result says where the excerpt starts in it.
        match = results[0].get("match") if rr == 1.0 else None
        error = abs(match["offset_s"] - q.offset_s) if match else None
        offset_errors[q.degradation].append(error)
        queries.append({**record, "reciprocal_rank": rr, "top": results[0]["track_id"] if results else None,
                        "offset_error_s": None if error is None else round(error, 3)})
    summary = {
        "excerpts": {
            "overall": _rank_metrics([rr for v in by_degradation.values() for rr in v]),
            "by_degradation": {name: {**_rank_metrics(v), **_offset_metrics(offset_errors[name])}
                               for name, v in by_degradation.items()},
            **({"skipped": skipped} if skipped else {}),
        },
        "tags": None if excerpts_only else _tag_precision(search, tracks, progress=progress),
        "versions": None if excerpts_only else _version_mrr(search, tracks, progress=progress),
        "queries": queries,
    }
    return summary


def _rank_metrics(rrs: Sequence[float]) -> dict:
    rrs = np.asarray(rrs, dtype=np.float64)
    if rrs.size == 0:
        return {"n": 0, "top1": None, "top10": None, "mrr": None}
    return {"n": int(rrs.size), "top1": round(float(np.mean(rrs == 1.0)), 4),
            "top10": round(float(np.mean(rrs > 0)), 4), "mrr": round(float(rrs.mean()), 4)}


def _offset_metrics(errors: Sequence[float | None]) -> dict:
    """Share of queries found first with their offset right to 1 s (only when results carry a match)."""
    if not any(e is not None for e in errors):
        return {}
    return {"offset_within_1s": round(float(np.mean([e is not None and e <= 1.0 for e in errors])), 4)}


def _middle_excerpt(track: EvalTrack, seconds: float = 30.0) -> bytes:
    length = min(seconds, track.duration_s)
    offset = max(0.0, (track.duration_s - length) / 2)
    wave = load_audio(track.path, EXCERPT_SR, offset_s=offset, duration_s=length)
    return degrade.encode(wave, EXCERPT_SR, "wav")


def _tag_precision(search, tracks: Sequence[EvalTrack], *, progress: bool) -> dict | None:
    styled = [t for t in tracks if t.style]
    if len({t.style for t in styled}) < 2:
        return None
    style_of = {t.track_id: t.style for t in styled}
    precisions = []
    for t in tqdm(styled, desc="tag neighbours", unit="query", disable=not progress):
        results = search(_middle_excerpt(t), max_results=5, exclude_track_ids=[t.track_id])["results"]
        top = results[:5]
        precisions.append(sum(style_of.get(r["track_id"]) == t.style for r in top) / 5.0)
    return {"n": len(precisions), "precision_at_5": round(float(np.mean(precisions)), 4)}


def _version_mrr(search, tracks: Sequence[EvalTrack], *, progress: bool) -> dict | None:
    groups: dict[str, set[str]] = defaultdict(set)
    for t in tracks:
        if t.motif_id:
            groups[t.motif_id].add(t.track_id)
    takes = [t for t in tracks if t.motif_id and len(groups[t.motif_id]) > 1]
    if not takes:
        return None
    rrs = []
    for t in tqdm(takes, desc="version queries", unit="query", disable=not progress):
        results = search(_middle_excerpt(t), max_results=20, exclude_track_ids=[t.track_id])["results"]
        rrs.append(reciprocal_rank(results, groups[t.motif_id] - {t.track_id}))
    return {"n": len(rrs), "mrr": round(float(np.mean(rrs)), 4)}


def plot_summary(summary: dict, path: str | Path) -> Path:
    """A PNG: top-1 / top-10 accuracy and MRR per degradation."""
    from matplotlib.figure import Figure

    by = summary["excerpts"]["by_degradation"]
    names = list(by)
    x = np.arange(len(names))
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if not names:  # the excerpt measure was skipped: say why instead of drawing empty bars
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no excerpt queries\n" + summary["excerpts"].get("skipped", ""), ha="center",
                va="center", wrap=True)
        return _save(fig, path)
    for i, (key, label) in enumerate((("top1", "top-1"), ("top10", "top-10"), ("mrr", "MRR"))):
        ax.bar(x + (i - 1) * 0.27, [by[n][key] or 0.0 for n in names], width=0.27, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of excerpt queries")
    overall = summary["excerpts"]["overall"]
    ax.set_title(f"excerpt identification by degradation (n={overall['n']}, overall top-1 {overall['top1']:.2f})")
    ax.legend(loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
