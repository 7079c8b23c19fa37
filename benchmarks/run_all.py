"""The benchmark suite in one command: small (minutes) by default, --full for the sizes in BENCHMARKS.md.

    .venv/bin/python benchmarks/run_all.py [--full] [--out work/bench]

Runs, each in its own process so their memory and threads do not mix:
  decode_throughput.py   decode x real time per format
  pipeline_throughput.py decode-only vs core path vs Spark embed stage, once per embedder
                         (mel on the sample catalogue; CLAP in both checkpoint forms and
                         Wav2Vec2 as random-weight models of the real sizes, on fewer tracks:
                         on CPUs each of their clips costs seconds)
  query_latency.py       3-minute query, p50/p99 per stage and process memory, by index size
  faiss_indexes.py       build time, size, recall@10 and QPS for Flat / HNSW / IVF-PQ
Each writes its JSON to --out; a summary with the targets from the issues is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SIZES = {
    False: {"decode": ["--seconds", "30", "--repeats", "3"],
            "pipeline": ["--tracks", "24"],
            "pipeline_learned": ["--tracks", "2"],
            "query": ["--sizes", "10000", "100000", "--repeats", "15"],
            "faiss": ["--vectors", "100000", "--queries", "500"]},
    True: {"decode": ["--seconds", "120", "--repeats", "5"],
           "pipeline": ["--tracks", "96"],
           "pipeline_learned": ["--tracks", "8"],
           "query": ["--sizes", "10000", "100000", "--repeats", "30"],
           "faiss": ["--vectors", "1000000", "--queries", "1000"]},
}
SCRIPTS = {"decode": "decode_throughput.py", "pipeline": "pipeline_throughput.py",
           "query": "query_latency.py", "faiss": "faiss_indexes.py"}
LEARNED = ("clap-laion", "clap-transformers", "wav2vec2")


def runs(name: str, full: bool) -> list[tuple[str, list[str]]]:
    """(result name, arguments) for one suite entry; the pipeline runs once per embedder."""
    if name != "pipeline":
        return [(name, SIZES[full][name])]
    return [("pipeline", SIZES[full]["pipeline"])] + [
        (f"pipeline-{e}", [*SIZES[full]["pipeline_learned"], "--embedder", e, "--workdir", f"work/bench_pipeline_{e}_{'full' if full else 'small'}"])
        for e in LEARNED
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--out", default="work/bench")
    ap.add_argument("--only", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, script_args in [r for n in args.only for r in runs(n, args.full)]:
        started = time.perf_counter()
        cmd = [sys.executable, str(HERE / SCRIPTS[name.split("-")[0]]), *script_args, "--json"]
        print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        results[name] = json.loads(proc.stdout[proc.stdout.index("{"):])
        (out / f"{name}.json").write_text(json.dumps(results[name], indent=2))
        print(f"[{name}] done in {time.perf_counter() - started:.0f} s -> {out / (name + '.json')}", flush=True)
    print("\nsummary (targets from the issues)")
    if "pipeline" in results:
        p = results["pipeline"]
        print(f"  pipeline (mel) embed stage / decode-only: {p['embed_stage_vs_decode_only']:.2f} at {p['files']} tracks "
              f"(target >= 0.70, met from ~3,500 tracks: a run has ~10-14 s of fixed cost; BENCHMARKS.md); "
              f"core path / decode-only: {p['core_path_x_rt_per_core'] / p['decode_only_x_rt_per_core']:.2f}")
    for e in LEARNED:
        if f"pipeline-{e}" in results:
            p = results[f"pipeline-{e}"]
            print(f"  pipeline ({p['embedder_form']}): embed stage {p['spark_embed_stage_x_rt_per_core']} x RT per core, "
                  f"core path {p['core_path_x_rt_per_core']}, decode-only {p['decode_only_x_rt_per_core']}")
    if "query" in results:
        for n, r in results["query"]["sizes"].items():
            print(f"  3-min query at {n} clips: total p50 {r['total_ms']['p50']} ms (target < 300 at 100k), "
                  f"p99 {r['total_ms']['p99']} ms, process RSS {r['model_rss_mb']} MB")
    if "faiss" in results:
        for f, r in results["faiss"]["indexes"].items():
            best = r["search"][0]
            print(f"  {f} at {results['faiss']['vectors']}: recall@10 {best['recall_at_10']} with defaults "
                  f"(target >= 0.95 for the default approximate index), QPS {best['qps']}")
    if "decode" in results:
        print("  decode x RT per core: " + ", ".join(f"{k} {v['x_rt_per_core']}" for k, v in results["decode"]["formats"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
