"""How far the duplicate check's numbers stand from their thresholds (issue #12).

    .venv/bin/python benchmarks/duplicates_margins.py [--workdir work/bench_duplicates] [--sources 12] [--json]

A landmark candidate becomes a duplicate when its landmark score (aligned share of the shorter
track's landmarks) reaches ``min_score``, its peak share (the aligned hits' share of all the
pair's landmark matches at any offset) ``min_peak_share``, and its aligned similarity
(``duplicates._verify``: the median frame correlation of whitened spectra at the best of the
top-voted offsets) ``min_aligned_similarity``. This prints the three, per group, for every
candidate whatever its peak share, with ``conf/base.yaml``, and how many pass with which kind:

- ``planted``: the planted re-encodes, gain copies and edits of the three planted catalogues;
- ``others``: every landmark candidate between two tracks that are not a planted pair (unrelated
  tracks, or alternate takes, which must not be duplicates either), with the three planted
  catalogues and the demo catalogue pooled into one (as ``duplicates_planted.py --pooled``);
- ``mp3_64`` / ``mp3_32``: the first ``--sources`` tracks of the 40-track catalogue (no planted
  copies), each re-encoded as a constant-bitrate MP3 (``degrade.mp3``) at 22.05 kHz and compared
  with its source in an index of the two.

Catalogues are generated under ``--workdir`` once (shared with ``duplicates_planted.py``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import soxr
from duplicates_planted import CATALOGUES, _catalogue, _label

from soundalike import degrade
from soundalike.audio import load_audio
from soundalike.config import FingerprintConfig, load_config
from soundalike.duplicates import _verify, compare_track
from soundalike.fingerprint import FingerprintIndex, fingerprint_wave

ROOT = Path(__file__).resolve().parents[1]


def _candidates(waves: dict, cfg) -> list[tuple]:
    """Every landmark candidate of ``waves`` (8 kHz) whatever its peak share, verified:
    ``(a, b, kind, score, similarity, peak share)``."""
    fp_cfg = FingerprintConfig()
    index = FingerprintIndex.from_fingerprints({t: fingerprint_wave(w, 8000, fp_cfg) for t, w in waves.items()}, fp_cfg)
    any_share = dataclasses.replace(cfg, min_peak_share=0.0)
    out, seen = [], set()
    row_of = {str(t): i for i, t in enumerate(index.track_ids)}
    for row, tid in enumerate(index.track_ids):
        rows, _, hits, totals, _ = index.votes(index.track_fingerprint(row), exclude_rows=[row])
        share = {str(index.track_ids[r]): h / max(t, 1) for r, h, t in zip(rows, hits, totals)}
        for p in compare_track(index, row, any_share):
            key = frozenset((p.track_a, p.track_b))
            if key in seen:
                continue
            seen.add(key)
            other = p.track_b if p.track_a == str(tid) else p.track_a
            p, sim = _verify(index, p, waves.__getitem__, cfg, row_of)
            out.append((p.track_a, p.track_b, p.kind, p.score, sim, float(share[other])))
    return out


def _summary(rows: list[tuple], cfg) -> dict:
    passing = [r for r in rows if r[3] >= cfg.min_score and r[4] >= cfg.min_aligned_similarity
               and r[5] >= cfg.min_peak_share]
    return {
        "candidates": len(rows),
        "duplicates_at_defaults": len(passing),
        "score_min": round(min((r[3] for r in rows), default=float("nan")), 3),
        "score_max": round(max((r[3] for r in rows), default=float("nan")), 3),
        "similarity_min": round(min((r[4] for r in rows), default=float("nan")), 3),
        "similarity_median": round(float(np.median([r[4] for r in rows])) if rows else float("nan"), 3),
        "similarity_max": round(max((r[4] for r in rows), default=float("nan")), 3),
        "peak_share_min": round(min((r[5] for r in rows), default=float("nan")), 3),
        "peak_share_max": round(max((r[5] for r in rows), default=float("nan")), 3),
        "kinds": dict(collections.Counter(r[2] for r in passing)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="work/bench_duplicates")
    ap.add_argument("--sources", type=int, default=12, help="tracks re-encoded as MP3 (default: %(default)s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(ROOT / "conf" / "base.yaml").duplicates
    root = Path(args.workdir)
    parts = [_catalogue(root / f"planted_{n}_{s}", n, s) for n, s in CATALOGUES]
    parts.append(_catalogue(root / "demo_24_0", 24, 0, planted=False))
    paths = {tid: p for _, _, part_paths in parts for tid, p in part_paths.items()}
    truth = {frozenset((id_of[t.planted["of"]], id_of[t.file])) for part, id_of, _ in parts for t in part if t.planted}
    waves = {tid: load_audio(p, 8000) for tid, p in paths.items()}
    pooled = _candidates(waves, cfg)
    groups = {
        "planted": [r for r in pooled if frozenset(r[:2]) in truth],
        "others": [r for r in pooled if frozenset(r[:2]) not in truth],
    }
    details = {"others": [(_label(paths, a), _label(paths, b), kind, round(score, 3), round(sim, 3), round(share, 3))
                             for a, b, kind, score, sim, share in groups["others"]]}
    sources = [t for t in parts[2][0] if not t.planted][: args.sources]
    for kbps in (64, 32):
        rows = []
        for t in sources:
            wave = load_audio(root / "planted_40_1" / t.file, 22050)
            coded, coded_sr = degrade.mp3(wave, 22050, kbps=kbps)
            pair = {"source": soxr.resample(wave, 22050, 8000).astype(np.float32),
                    "mp3": soxr.resample(coded, coded_sr, 8000).astype(np.float32)}
            found = _candidates(pair, cfg)
            # No landmark candidate at all: the check never runs, the copy is missed.
            rows.append(found[0] if found else ("source", "mp3", "none", 0.0, float("-inf"), 0.0))
        groups[f"mp3_{kbps}"] = rows
        details[f"mp3_{kbps}"] = [(t.style, r[2], round(r[3], 3), round(r[4], 3), round(r[5], 3))
                                  for t, r in zip(sources, rows)]
    result = {"thresholds": {"min_score": cfg.min_score, "min_aligned_similarity": cfg.min_aligned_similarity,
                             "min_peak_share": cfg.min_peak_share},
              "groups": {k: _summary(v, cfg) for k, v in groups.items()}, "details": details}
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        return 0
    print(f"thresholds: landmark score >= {cfg.min_score}, aligned similarity >= {cfg.min_aligned_similarity}, "
          f"peak share >= {cfg.min_peak_share}")
    for name, s in result["groups"].items():
        print(f"{name:>10}: {s['duplicates_at_defaults']}/{s['candidates']} pass {s['kinds']}; "
              f"score {s['score_min']}-{s['score_max']}; similarity {s['similarity_min']} / {s['similarity_median']} / "
              f"{s['similarity_max']} (min / median / max); peak share {s['peak_share_min']}-{s['peak_share_max']}")
    for name in ("others", "mp3_64", "mp3_32"):
        for row in details[name]:
            print(f"{'':>12}{name}: {row}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
