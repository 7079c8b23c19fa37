"""FAISS index types side by side: build time, memory, recall@10 and QPS.

    .venv/bin/python benchmarks/faiss_indexes.py --vectors 1000000 [--queries 1000] [--json]

Vectors are synthetic clustered unit vectors of the mel embedder's dimension (225): real clip
embeddings cluster by track and style, and uniform random vectors would understate ANN recall.
Queries are held-out vectors from the same mixture. Recall@10 is measured against exact
inner-product search (Flat) on the same queries; QPS is single-batch throughput with all threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import faiss
import numpy as np

from soundalike.config import IndexConfig
from soundalike.index import build_index, choose_factory, tune


def clustered(n: int, dim: int, rng, centres) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, 200_000):
        b = min(n, a + 200_000)
        x = centres[rng.integers(0, len(centres), b - a)] + 0.35 * rng.standard_normal((b - a, dim)).astype(np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=225)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--factories", nargs="+", default=None,
                    help="factory strings (default: Flat, HNSW32,Flat, and the IVF-PQ that auto picks)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(64, args.vectors // 200), args.dim)).astype(np.float32)
    base = clustered(args.vectors, args.dim, rng, centres)
    queries = clustered(args.queries, args.dim, rng, centres)
    cfg = IndexConfig()
    # The IVF-PQ string is what `auto` picks above hnsw_max, sized for this many vectors.
    ivf = choose_factory(args.vectors, args.dim, dataclasses.replace(cfg, exact_max=0, hnsw_max=0))
    factories = args.factories or ["Flat", "HNSW32,Flat", ivf]
    ids = np.zeros(args.vectors, dtype=object)
    idx = np.zeros(args.vectors, dtype=np.int32)
    start = np.zeros(args.vectors)
    report = {"vectors": args.vectors, "dim": args.dim, "queries": args.queries, "threads": faiss.omp_get_max_threads(),
              "params": {"nprobe": cfg.nprobe, "ef_search": cfg.ef_search, "k_factor": cfg.k_factor}, "indexes": {}}
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(base)
    _, truth = exact.search(queries, 10)
    del exact
    sweeps = {"HNSW": [{"ef_search": e} for e in (64, 128, 256, 512)],
              "IVF": [{"nprobe": p, "k_factor": k} for p in (32, 64, 128) for k in (8, 32)]}
    for factory in factories:
        t0 = time.perf_counter()
        index = build_index(base, ids, idx, start, embedder="bench", factory=factory, params=cfg)
        build_s = time.perf_counter() - t0
        size = faiss.serialize_index(index.index).nbytes
        runs = []
        kind = "HNSW" if factory.startswith("HNSW") else "IVF" if factory.startswith("IVF") else None
        for knobs in [{}] + sweeps.get(kind, []):
            tune(index.index, dataclasses.replace(cfg, **knobs))
            t0 = time.perf_counter()
            _, got = index.index.search(queries, 10)
            search_s = time.perf_counter() - t0
            recall = float(np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth, got)]))
            runs.append({"params": knobs or "defaults", "recall_at_10": round(recall, 4),
                         "qps": round(args.queries / search_s, 1)})
        report["indexes"][factory] = {"build_s": round(build_s, 1), "index_mb": round(size / 2**20, 1), "search": runs}
        del index
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"{args.vectors} vectors x {args.dim}, {args.queries} queries, {report['threads']} threads")
        for f, r in report["indexes"].items():
            print(f"  {f:24} build {r['build_s']:>7.1f} s  size {r['index_mb']:>7.1f} MB")
            for run in r["search"]:
                print(f"      {str(run['params']):40} recall@10 {run['recall_at_10']:.4f}  QPS {run['qps']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
