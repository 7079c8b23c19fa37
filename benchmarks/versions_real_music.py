"""False versions on real music: every pair of real recordings scored as ``find_pairs`` does (issue #12).

    .venv/bin/python benchmarks/versions_real_music.py [ROOT ...] [--min-duration 20] [--workdir work/bench_versions_real]

Real music has no planted truth, but almost all of its pairs are unrelated pieces: what passes the
version thresholds here is mostly false. ROOT defaults to ``/usr/share/games`` (the ogg
soundtracks of the Debian packages ``supertux-data`` and ``hedgewars-data``; not in the
repository). Every distinct ``.ogg``/``.flac``/``.wav``/``.mp3`` file (by content hash) of at
least ``--min-duration`` seconds is decoded at 8 kHz and its pitch sequence taken (cached under
``--workdir`` per ``PITCH_REVISION``); then every pair is scored with
``symmetric_version_score`` (``version_score`` both ways, the weaker counts) alone, without
``find_pairs``' pitch-profile pre-filter, so this is the worst case. Printed: the pairs that pass
the significance threshold alone and those that pass the defaults (significance, above-chance
and melody share), with tempo ratio and offset, so they can be checked by ear, and the costs.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from soundalike.audio import load_audio
from soundalike.config import DuplicatesConfig
from soundalike.duplicates import PITCH_REVISION, is_version, pitch_sequence, symmetric_version_score

SUFFIXES = {".ogg", ".flac", ".wav", ".mp3"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*", default=["/usr/share/games"])
    ap.add_argument("--min-duration", type=float, default=20.0)
    ap.add_argument("--workdir", default="work/bench_versions_real")
    args = ap.parse_args(argv)
    files = sorted(p for r in args.roots for p in Path(r).rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    seen, tracks = set(), []
    for p in files:
        try:
            if sf.info(str(p)).duration < args.min_duration:
                continue
        except RuntimeError:
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            tracks.append((digest, p))
    if len(tracks) < 2:
        print(f"fewer than two files of >= {args.min_duration} s under {args.roots}", file=sys.stderr)
        return 1
    cache = Path(args.workdir) / f"pitch_rev{PITCH_REVISION}"
    cache.mkdir(parents=True, exist_ok=True)
    seqs, pitch_s, made = {}, 0.0, 0
    for digest, p in tracks:
        f = cache / f"{digest[:16]}.npy"
        if f.exists():
            seqs[p] = np.load(f)
            continue
        wave = load_audio(p, 8000)
        t0 = time.perf_counter()
        seqs[p] = pitch_sequence(wave, 8000)
        pitch_s += time.perf_counter() - t0
        made += 1
        np.save(f, seqs[p])
    cfg = DuplicatesConfig()
    t0 = time.perf_counter()
    rows = []
    for a, b in itertools.combinations(sorted(seqs), 2):
        scored = symmetric_version_score(seqs[a], seqs[b], cfg)
        sig, above, score, ratio, offset, overlap, share = scored
        rows.append((sig, above, ratio, offset, a, b, share, is_version(scored, cfg)))
    pairs_s = time.perf_counter() - t0
    root = Path(args.roots[0])
    name = lambda p: str(p.relative_to(root)) if p.is_relative_to(root) else str(p)  # noqa: E731
    minutes = sum(s.shape[-1] for s in seqs.values()) * 0.125 / 60
    print(f"{len(tracks)} distinct files >= {args.min_duration:g} s ({minutes:.0f} min), {len(rows)} pairs, "
          f"PITCH_REVISION {PITCH_REVISION}")
    sig_only = [r for r in rows if r[0] >= cfg.version_min_significance]
    passing = [r for r in sig_only if r[7]]
    print(f"significance >= {cfg.version_min_significance}: {len(sig_only)} pairs; "
          f"and above_chance >= {cfg.version_min_above_chance} and melody share >= {cfg.version_min_melody_share} "
          f"(defaults): {len(passing)} pairs")
    for r in sorted(sig_only, key=lambda r: -r[1]):
        mark = "PASS" if r[7] else "    "
        print(f"  {mark} significance {r[0]:5.2f} above_chance {r[1]:5.2f} melody share {r[6]:.2f} tempo {r[2]:.2f} "
              f"offset {r[3]:6.1f} s  "
              f"{name(r[4])}  ~  {name(r[5])}")
    nxt = max((r[1] for r in rows if not r[7]), default=float("nan"))
    print(f"highest above_chance of a pair not passing: {nxt:.2f}")
    if made:
        print(f"pitch sequence: {1000 * pitch_s / made:.0f} ms a track ({made} made, the rest cached)")
    print(f"symmetric_version_score: {1000 * pairs_s / len(rows):.1f} ms a pair (both ways)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
