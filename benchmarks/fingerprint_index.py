"""Fingerprint index cost at catalogue scale: build time, memory, query latency (issue #12).

    .venv/bin/python benchmarks/fingerprint_index.py [--sizes 1000 10000] [--seconds 30] [--queries 50] [--json]

Tracks are synthetic 8 kHz recordings (random melodies with 2-6 harmonics, random note lengths,
tempo and timbre, plus noise-burst percussion), distinct per track, so hash buckets fill like a
catalogue of different songs. For each size: ``build`` = fingerprinting every track
(``fingerprint_wave``) + sorting the index (``FingerprintIndex.from_fingerprints``), ``index
bytes`` = the three arrays in memory (= the .npy files), ``peak RSS`` = the process's high-water
mark after the build, and query latency = ``match_wave`` of a 20 s excerpt (phone band,
through all 7 speed copies: the work ``Searcher.search`` adds) with p50 / p99 over
``--queries`` queries, and its top-1. ``duplicates`` = the duplicates stage's work for one new
track against the catalogue (``find_pairs``: landmark votes of the whole track, the aligned
check of candidates, pitch sequences against the ``version_candidates`` closest), per track over
``--new`` tracks.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from soundalike import degrade
from soundalike.config import load_config
from soundalike.duplicates import find_pairs, pitch_sequence
from soundalike.fingerprint import FingerprintIndex, fingerprint_wave

SR = 8000


def synthetic_track(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n, np.float32)
    beat = 60.0 / rng.uniform(70, 170)
    t0 = 0.0
    harmonics = int(rng.integers(2, 7))
    decay = rng.uniform(2.0, 8.0)
    while t0 < seconds:
        length = beat * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
        f0 = 110.0 * 2 ** (int(rng.integers(0, 36)) / 12)
        m = min(int(length * SR), n - int(t0 * SR))
        t = np.arange(m, dtype=np.float32) / SR
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1) if f0 * k < SR / 2)
        start = int(t0 * SR)
        out[start:start + m] += (tone * np.exp(-decay * t)).astype(np.float32)
        if rng.random() < 0.5:  # a percussion hit
            hit = min(int(0.05 * SR), m)
            out[start:start + hit] += 0.3 * rng.standard_normal(hit).astype(np.float32) * np.exp(-np.arange(hit) / 80.0)
        t0 += length
    return 0.5 * out / (np.abs(out).max() + 1e-9)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each synthetic track")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--new", type=int, default=5, help="new tracks timed through the duplicates comparison")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="fingerprint.KEY=VALUE")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    full = load_config(None, args.overrides)
    cfg = full.fingerprint
    pitch: dict[str, np.ndarray] = {}
    report = {"track_seconds": args.seconds, "overrides": args.overrides, "sizes": {}}
    fps: dict[str, object] = {}
    fp_seconds = 0.0
    rng = np.random.default_rng(1)
    for size in sorted(args.sizes):
        for i in range(len(fps), size):  # the larger catalogue extends the smaller one
            wave = synthetic_track(i, args.seconds)
            t0 = time.perf_counter()
            fps[f"t{i:06d}"] = fingerprint_wave(wave, SR, cfg)
            fp_seconds += time.perf_counter() - t0
            pitch[f"t{i:06d}"] = pitch_sequence(wave, SR)
        t0 = time.perf_counter()
        index = FingerprintIndex.from_fingerprints(fps, cfg)
        sort_s = time.perf_counter() - t0
        latencies, hits = [], 0
        for q in range(args.queries + 2):
            i = int(rng.integers(size))
            offset = float(rng.uniform(0, args.seconds - 20.0))
            wave = synthetic_track(i, args.seconds)[int(offset * SR): int((offset + 20.0) * SR)]
            wave, sr = degrade.apply("phone", wave, SR, rng=rng)
            t0 = time.perf_counter()
            matches = index.match_wave(wave, sr, max_results=10)
            if q >= 2:
                latencies.append((time.perf_counter() - t0) * 1000)
                hits += bool(matches) and matches[0].track_id == f"t{i:06d}" and matches[0].confident
        dup_ms = []
        for _ in range(args.new):
            i = int(rng.integers(size))
            t0 = time.perf_counter()
            find_pairs(index, pitch, new_ids=[f"t{i:06d}"], cfg=full.duplicates,
                       load_wave=lambda tid: synthetic_track(int(tid[1:]), args.seconds))
            dup_ms.append((time.perf_counter() - t0) * 1000)
        report["sizes"][size] = {
            "tracks": size,
            "audio_hours": round(size * args.seconds / 3600, 2),
            "entries": len(index),
            "entries_per_audio_s": round(len(index) / (size * args.seconds), 1),
            "index_mb": round(index.nbytes / 1e6, 1),
            "fingerprint_s_total": round(fp_seconds, 1),
            "fingerprint_ms_per_audio_min": round(fp_seconds / (size * args.seconds / 60) * 1000, 1),
            "sort_s": round(sort_s, 2),
            "peak_rss_mb": round(peak_rss_mb(), 0),
            "query_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                         "p99": round(float(np.percentile(latencies, 99)), 1)},
            "query_top1": round(hits / args.queries, 3),
            "duplicates_ms_per_new_track": round(float(np.median(dup_ms)), 1) if dup_ms else None,
        }
        del index
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        for size, r in report["sizes"].items():
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
