"""Query latency by stage: a 3-minute query against clip indexes of 10k and 100k vectors.

    .venv/bin/python benchmarks/query_latency.py [--sizes 10000 100000] [--repeats 30] [--json]

The query is a real 3-minute recording (synthesised, written as mp3, decoded like any upload);
the index holds synthetic clustered unit vectors of the mel embedder's dimension plus the query's
own clips, so the fusion sees realistic neighbour lists. Stages are timed separately:
decode (load_audio), embed (chunk + flags + mel), search (FAISS), fusion (per-song votes).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from soundalike.audio import load_audio
from soundalike.config import load_config
from soundalike.embedders import create_embedder
from soundalike.extract import extract_track
from soundalike.fusion import fuse
from soundalike.index import build_index, choose_factory
from soundalike.sample import synthesize_track
from soundalike.search import Searcher


def clustered(n: int, dim: int, rng) -> np.ndarray:
    centres = rng.standard_normal((max(16, n // 50), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rss_mb() -> float:
    """Resident memory of this process, MB (Linux /proc)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values, q):
    return round(float(np.percentile(values, q)), 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the served model uses 1 per worker)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(None)
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    rng = np.random.default_rng(0)

    wave = synthesize_track("piano_arpeggio", duration_s=180.0, sample_rate_hz=44100, seed=5)
    buffer = io.BytesIO()
    sf.write(buffer, wave, 44100, format="MP3")
    query = buffer.getvalue()
    own = extract_track(query, embedder, cfg.clips)

    report = {"query": "180 s mp3, 44.1 kHz", "embedder": embedder.key, "threads": args.threads, "sizes": {}}
    base_rss = rss_mb()  # the embedder and the decoded query are loaded already
    report["process_rss_mb_before_index"] = round(base_rss, 1)
    for n in args.sizes:
        vectors = np.concatenate([clustered(n - len(own), embedder.dim, rng), own.vectors])
        track_ids = np.array([f"t{i // 20}" for i in range(len(vectors))], dtype=object)
        track_ids[-len(own):] = "query-source"
        clip_idx = np.arange(len(vectors)) % 20
        index = build_index(vectors, track_ids, clip_idx, clip_idx * 10.0, embedder=embedder.key,
                            factory=choose_factory(len(vectors), embedder.dim, cfg.index), params=cfg.index)
        tracks = pd.DataFrame({"track_id": sorted(set(track_ids)), "path": "", "title": "", "tags": [[]] * len(set(track_ids))})
        searcher = Searcher(embedder, index, tracks, cfg.clips, cfg.query)
        del vectors  # what stays is what a loaded model holds
        index_rss = rss_mb()
        stages = {"decode": [], "embed": [], "search": [], "fusion": [], "total": []}
        for i in range(args.repeats + 2):
            t0 = time.perf_counter()
            load_audio(query, embedder.sample_rate_hz)
            t1 = time.perf_counter()
            clips = extract_track(query, embedder, cfg.clips)
            t2 = time.perf_counter()
            sims, rows = index.search(clips.vectors, cfg.query.top_k_per_chunk)
            tids, cidx, cstart = index.lookup(rows)
            t3 = time.perf_counter()
            songs = fuse(clips.start_s, sims, tids, cstart, cidx)
            t4 = time.perf_counter()
            result = searcher.search(query)
            t5 = time.perf_counter()
            assert songs[0].track_id == "query-source" and result["results"][0]["track_id"] == "query-source"
            if i >= 2:  # warm-up excluded
                stages["decode"].append((t1 - t0) * 1000)
                # extract_track decodes too: its decode share is taken out to leave the embed stage.
                stages["embed"].append(max(0.0, (t2 - t1) - (t1 - t0)) * 1000)
                stages["search"].append((t3 - t2) * 1000)
                stages["fusion"].append((t4 - t3) * 1000)
                stages["total"].append((t5 - t4) * 1000)
        report["sizes"][n] = {
            "factory": index.factory,
            "model_rss_mb": round(index_rss, 1),
            **{f"{k}_ms": {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in stages.items()},
        }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"query: {report['query']}, embedder {report['embedder']}, torch threads {args.threads}")
        for n, r in report["sizes"].items():
            cells = "  ".join(f"{k[:-3]} p50 {v['p50']:.1f} / p99 {v['p99']:.1f} ms" for k, v in r.items() if k.endswith("_ms"))
            print(f"{n:>8} clips ({r['factory']}, process RSS {r['model_rss_mb']:.0f} MB): {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
