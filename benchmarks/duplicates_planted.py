"""Duplicates and versions on generated catalogues with planted duplicates (issue #12).

    .venv/bin/python benchmarks/duplicates_planted.py [--workdir work/bench_duplicates] [--pooled] [--json]

Generates (once, cached under ``--workdir``) the three catalogues of BENCHMARKS.md (16 tracks
seed 5, 10 tracks seed 5, 40 tracks seed 1; 30-60 s; ``--plant-duplicates``), decodes every
distinct file (by content hash) at 8 kHz, fingerprints it and takes its pitch sequence, then runs
``duplicates.find_pairs`` (the stage's core) with the aligned check. The truth comes from the
sidecar (``planted``, ``motif_id``), which the pairing never sees. Per catalogue and in total:

- planted duplicates found with their kind (and, for ``contained``, the offset within 0.5 s);
- false duplicates (a ``re-encode``/``contained`` pair that was not planted);
- alternate-take pairs (same ``motif_id``) found as ``version`` / planted, with their
  significance/above_chance/melody share (``symmetric_version_score``: both ways, the weaker;
  thresholds ``version_min_significance``, ``version_min_above_chance``,
  ``version_min_melody_share``);
- unrelated pairs reported as ``version``, and the highest significance and above_chance of any
  unrelated pair (the margins under the thresholds), and the unrelated pairs that pass the first
  two thresholds and are stopped only by the melody share;
- per-track cost: pitch sequence (``pitch ms``) and ``find_pairs`` over the catalogue divided by
  the number of distinct tracks (``pairs ms``).

With ``--pooled``, the three catalogues and the demo catalogue (``make demo``'s 24 tracks, seed
0, 30-120 s, generated under ``--workdir`` too) are also run as one catalogue: about 110 distinct
tracks, where every pair across two of them is unrelated (different seeds or plans), so a
catalogue that size is checked for false duplicates and false versions too.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from soundalike.audio import load_audio
from soundalike.config import DuplicatesConfig, FingerprintConfig
from soundalike.duplicates import find_pairs, is_version, pitch_sequence, symmetric_version_score
from soundalike.fingerprint import FingerprintIndex, fingerprint_wave
from soundalike.sample import METADATA_FILENAME, generate_catalogue, load_metadata

CATALOGUES = ((16, 5), (10, 5), (40, 1))
DUPLICATE_KINDS = {"re-encode", "contained"}


def _significance(p) -> str:
    """A version's significance/above_chance/melody share, or ``landmarks`` for one found by the landmark check."""
    return next((f"{e['significance']:.2f}/{e['above_chance']:.2f}/{e['melody_share']:.2f}" for e in p.evidence
                 if "significance" in e),
                "landmarks")


def _catalogue(root: Path, n_tracks: int, seed: int, *, planted: bool = True) -> tuple[list, dict, dict]:
    """``(tracks, id_of file -> content hash, path of each distinct hash)``, generating once."""
    if (root / METADATA_FILENAME).exists():
        tracks = load_metadata(root)
    elif planted:
        tracks = generate_catalogue(root, n_tracks=n_tracks, seed=seed, min_duration_s=30.0, max_duration_s=60.0,
                                    progress=False, plant_duplicates=True)
    else:  # the demo catalogue: `make demo`'s `sample-catalogue --tracks 24 --seed 0`
        tracks = generate_catalogue(root, n_tracks=n_tracks, seed=seed, progress=False)
    id_of, paths = {}, {}
    for t in tracks:
        tid = hashlib.sha256((root / t.file).read_bytes()).hexdigest()
        id_of[t.file] = tid
        paths.setdefault(tid, root / t.file)
    return tracks, id_of, paths


def _label(paths: dict, tid: str) -> str:
    return f"{paths[tid].parent.name}/{paths[tid].name}"


def run_catalogue(name: str, parts: list[tuple[list, dict, dict]], cfg: DuplicatesConfig) -> dict:
    """Pairs of one catalogue made of ``parts`` (one generated catalogue, or several pooled).

    Pooled, the truth is each part's own: alternate takes share a ``motif_id`` within a part
    (motif ids are per catalogue), and every pair across parts is unrelated.
    """
    tracks = [t for part, _, _ in parts for t in part]
    paths = {tid: p for _, _, part_paths in parts for tid, p in part_paths.items()}
    fp_cfg = FingerprintConfig()
    waves = {tid: load_audio(p, 8000) for tid, p in paths.items()}
    index = FingerprintIndex.from_fingerprints({t: fingerprint_wave(w, 8000, fp_cfg) for t, w in waves.items()}, fp_cfg)
    t0 = time.perf_counter()
    pitch = {t: pitch_sequence(w, 8000) for t, w in waves.items()}
    pitch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = find_pairs(index, pitch, new_ids=list(paths), cfg=cfg, load_wave=waves.__getitem__)
    pairs_s = time.perf_counter() - t0

    by_key = {frozenset((p.track_a, p.track_b)): p for p in pairs}
    found = exact = 0
    truth, takes = set(), set()
    for part, id_of, _ in parts:
        for t in part:
            if not t.planted:
                continue
            pair = frozenset((id_of[t.planted["of"]], id_of[t.file]))
            truth.add(pair)
            if t.planted["kind"] == "exact":
                exact += id_of[t.file] == id_of[t.planted["of"]]
                continue
            p = by_key.get(pair)
            if p is not None and p.kind == t.planted["kind"] and (
                    p.kind != "contained" or abs(p.offset_s - t.planted["offset_s"]) <= 0.5):
                found += 1
        motif = {t.file: t.motif_id for t in part if t.motif_id}
        takes |= {frozenset((id_of[a], id_of[b])) for a, b in itertools.combinations(motif, 2) if motif[a] == motif[b]}
    versions = [p for p in pairs if p.kind == "version"]
    # The margin: the best significance of any pair that is neither a take nor a planted duplicate.
    unrelated = {(a, b): symmetric_version_score(pitch[a], pitch[b], cfg) for a, b in itertools.combinations(sorted(pitch), 2)
                 if frozenset((a, b)) not in takes and frozenset((a, b)) not in truth}
    stopped = [(_label(paths, a), _label(paths, b), f"{u[0]:.2f}/{u[1]:.2f}/{u[6]:.2f}") for (a, b), u in unrelated.items()
               if u[0] >= cfg.version_min_significance and u[1] >= cfg.version_min_above_chance and not is_version(u, cfg)]
    unrelated = list(unrelated.values())
    wrong = [p for p in versions if frozenset((p.track_a, p.track_b)) not in takes]
    false_duplicates = [p for p in pairs if p.kind in DUPLICATE_KINDS and frozenset((p.track_a, p.track_b)) not in truth]
    return {
        "catalogue": name,
        "distinct": len(paths),
        "duplicates_found": found + exact,
        "duplicates_planted": sum(1 for t in tracks if t.planted),
        "false_duplicates": len(false_duplicates),
        "versions_found": sum(1 for p in versions if frozenset((p.track_a, p.track_b)) in takes),
        "versions_planted": len(takes),
        "unrelated_versions": len(wrong),
        "false_duplicate_detail": [(_label(paths, p.track_a), _label(paths, p.track_b), p.kind, round(p.score, 3))
                                   for p in false_duplicates],
        "unrelated_max_significance": round(max((u[0] for u in unrelated), default=0.0), 2),
        "unrelated_max_above_chance": round(max((u[1] for u in unrelated), default=-np.inf), 2),
        "unrelated_detail": [(_label(paths, p.track_a), _label(paths, p.track_b), _significance(p)) for p in wrong],
        "unrelated_stopped_by_melody_share": stopped,
        "take_significance": sorted((_significance(p) for p in versions if frozenset((p.track_a, p.track_b)) in takes),
                                    key=lambda x: float(x.split("/")[0]) if x[0].isdigit() else -1.0),
        "missed_takes": [(_label(paths, a), _label(paths, b)) for a, b in (sorted(k) for k in takes)
                         if not (frozenset((a, b)) in by_key and by_key[frozenset((a, b))].kind == "version")],
        "pitch_ms_per_track": 1000 * pitch_s / len(paths),
        "pairs_ms_per_track": 1000 * pairs_s / len(paths),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="work/bench_duplicates")
    ap.add_argument("--pooled", action="store_true",
                    help="also pool the three catalogues and the demo catalogue (24 tracks, seed 0) into one: "
                         "every pair across them is unrelated")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = DuplicatesConfig()
    root = Path(args.workdir)
    parts = [_catalogue(root / f"planted_{n}_{s}", n, s) for n, s in CATALOGUES]
    rows = [run_catalogue(f"{n} tracks seed {s}", [part], cfg) for (n, s), part in zip(CATALOGUES, parts)]
    keys = ("duplicates_found", "duplicates_planted", "false_duplicates", "versions_found", "versions_planted",
            "unrelated_versions")
    total = {k: sum(r[k] for r in rows) for k in keys}
    n = sum(r["distinct"] for r in rows)
    total["pitch_ms_per_track"] = sum(r["pitch_ms_per_track"] * r["distinct"] for r in rows) / n
    total["pairs_ms_per_track"] = sum(r["pairs_ms_per_track"] * r["distinct"] for r in rows) / n
    if args.pooled:
        demo = _catalogue(root / "demo_24_0", 24, 0, planted=False)
        rows.append(run_catalogue("pooled, with the demo", parts + [demo], cfg))
    if args.json:
        json.dump({"catalogues": rows, "total": total}, sys.stdout, indent=2)
        return 0
    for r in rows[:3] + [dict(total, catalogue="total")] + rows[3:]:
        print(f"{r['catalogue']:>20}: duplicates {r['duplicates_found']}/{r['duplicates_planted']}, "
              f"false duplicates {r['false_duplicates']}, versions {r['versions_found']}/{r['versions_planted']}, "
              f"unrelated versions {r['unrelated_versions']}, pitch {r['pitch_ms_per_track']:.0f} ms/track, "
              f"find_pairs {r['pairs_ms_per_track']:.0f} ms/track")
        for k in ("take_significance", "false_duplicate_detail", "unrelated_max_significance", "unrelated_max_above_chance", "unrelated_detail",
                  "unrelated_stopped_by_melody_share",
                  "missed_takes"):
            if r.get(k):
                print(f"{'':>22}{k}: {r[k]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
