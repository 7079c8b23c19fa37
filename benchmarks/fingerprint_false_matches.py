"""Confident fingerprint matches that are wrong: songs the catalogue does not hold (issue #12).

    .venv/bin/python benchmarks/fingerprint_false_matches.py DIR [--tracks 40] [--json]

Fingerprints every audio file under DIR (the first ``--tracks``, sorted; files shorter than 35 s
are left out), then, with the ``conf/base.yaml`` settings and again with
``fingerprint.min_peak_share`` 0 (the rule before it existed):

- ``whole``: each track queried whole with itself excluded, as ``query --exclude-self`` does:
  any confident match is wrong;
- ``excerpt_without_source``: one 10-30 s excerpt per degradation of each track (seeded), its
  source excluded (a song the catalogue lacks): any confident match is wrong;
- ``excerpt``: the same excerpts with the source present: the source should be first and
  confident.

Also the peak share (aligned hits / all landmark matches with the track) of the true matches
and of the wrong ones with at least ``min_aligned_hits``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from soundalike import degrade
from soundalike.audio import load_audio
from soundalike.config import load_config
from soundalike.fingerprint import build_fingerprint_index

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SR = 22050


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", type=Path)
    ap.add_argument("--tracks", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(ROOT / "conf" / "base.yaml").fingerprint
    files = sorted(str(p) for p in args.directory.rglob("*") if p.suffix.lower() in EXTENSIONS)
    waves = {}
    for f in files:
        if len(waves) == args.tracks:
            break
        w = load_audio(f, SR)
        if w.shape[0] >= 35 * SR:
            waves[f] = w
    index = build_fingerprint_index({f: f for f in waves}, cfg)
    rng = np.random.default_rng(args.seed)
    queries = []  # (kind, source, wave, sr)
    for f, w in waves.items():
        queries.append(("whole", f, w, SR))
        for name in degrade.DEGRADATIONS:
            seconds = rng.uniform(10, 30)
            start = int(rng.uniform(0, w.shape[0] / SR - seconds) * SR)
            x, xsr = degrade.apply(name, w[start:start + int(seconds * SR)], SR, rng=rng)
            queries.append(("excerpt", f, x, xsr))
    result = {"directory": str(args.directory), "tracks": len(waves), "min_peak_share": cfg.min_peak_share}
    for label, share in (("with_rule", cfg.min_peak_share), ("without_rule", 0.0)):
        index.cfg = dataclasses.replace(cfg, min_peak_share=share)
        wrong, n, found, true_share, wrong_share = {}, {}, 0, [], []
        for kind, f, x, xsr in queries:
            excluded = [f] if kind == "whole" else []
            for k in ([kind] if kind == "whole" else ["excerpt", "excerpt_without_source"]):
                matches = index.match_wave(x, xsr, exclude_track_ids=[f] if k != "excerpt" else excluded)
                n[k] = n.get(k, 0) + 1
                if k == "excerpt":
                    found += bool(matches and matches[0].track_id == f and matches[0].confident)
                    true_share += [m.peak_share for m in matches if m.track_id == f]
                else:
                    wrong[k] = wrong.get(k, 0) + any(m.confident for m in matches)
                    wrong_share += [m.peak_share for m in matches[:1] if m.aligned_hits >= cfg.min_aligned_hits]
        result[label] = {
            "whole_confident_wrong": f"{wrong.get('whole', 0)}/{n['whole']}",
            "excerpt_without_source_confident_wrong": f"{wrong.get('excerpt_without_source', 0)}/{n['excerpt_without_source']}",
            "excerpt_source_first_and_confident": f"{found}/{n['excerpt']}",
        }
        result["true_peak_share_min"] = round(min(true_share), 4) if true_share else None
        result["wrong_peak_share_max_at_min_hits"] = round(max(wrong_share), 4) if wrong_share else None
        result["wrong_at_min_hits"] = len(wrong_share)
    index.cfg = cfg
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
