"""Concurrent clients against the local scoring server: latency p50/p99 and throughput.

    .venv/bin/python benchmarks/serving_concurrency.py --conf conf/local.yaml [--clients 1,4,8]
        [--seconds 20] [--workers 2] [--query-seconds 30] [--json]

Needs a registered model (``make demo`` registers ``soundalike_search@champion`` in the local
profile's work dir). Starts ``mlflow models serve`` on it (:func:`soundalike.serving.local_server`,
``--workers`` server processes), then for each client count runs that many threads for
``--seconds``, each posting back-to-back queries: ``--query-seconds`` excerpts (WAV bytes, base64)
cut at varying offsets from the catalogue's own files, so every query does the full decode →
embed → search → fusion. Every request must be answered with 200; the table reports requests,
errors, requests/s and latency p50 / p99 per client count, and the server's memory before and after.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

from soundalike.audio import load_audio
from soundalike.catalogue import scan_catalogue
from soundalike.config import load_config
from soundalike.serving import local_server


def queries(cfg, seconds: float, n: int = 16) -> list[bytes]:
    """``n`` request bodies: excerpts of catalogue files at spread offsets."""
    files = [f.path for f in scan_catalogue(cfg.catalogue.path, extensions=cfg.catalogue.extensions)]
    if not files:
        raise SystemExit(f"no audio under {cfg.catalogue.path}: run `make demo` first")
    bodies = []
    for i in range(n):
        path = files[i % len(files)]
        wave = load_audio(path, 22050, offset_s=float(i % 3) * 3.7, duration_s=seconds)
        buf = io.BytesIO()
        sf.write(buf, wave, 22050, format="WAV", subtype="PCM_16")
        record = {"audio_b64": base64.b64encode(buf.getvalue()).decode()}
        bodies.append(json.dumps({"dataframe_records": [record], "params": {"max_results": 10}}).encode())
    return bodies


def run_clients(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        i = k
        while time.monotonic() < stop:
            request = urllib.request.Request(f"{url}/invocations", data=bodies[i % len(bodies)],
                                             headers={"Content-Type": "application/json"})
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    response.read()
                    ok = response.status == 200
            except (urllib.error.URLError, OSError) as exc:
                ok, reason = False, str(exc)
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed) if ok else errors.append(reason)
            i += clients

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    lat = np.array(latencies) * 1000
    return {
        "clients": clients, "requests": len(latencies) + len(errors), "errors": len(errors),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "max_ms": round(float(lat.max()), 1) if lat.size else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", default="conf/local.yaml")
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--query-seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(args.conf)
    bodies = queries(cfg, args.query_seconds)
    rows = []
    with local_server(cfg, workers=args.workers, log_path=Path(cfg.workdir) / "serve_bench.log") as server:
        run_clients(server.url, bodies, 2, 5.0)  # warm-up: every worker loads and touches its model
        rss_before = server.rss_bytes()
        for clients in sorted({int(c) for c in args.clients.split(",")}):
            rows.append(run_clients(server.url, bodies, clients, args.seconds))
            print(f"  {clients} clients: done", file=sys.stderr, flush=True)
        rss_after = server.rss_bytes()
    out = {
        "server_workers": args.workers, "query_seconds": args.query_seconds, "seconds_per_level": args.seconds,
        "server_rss_mb_before": round(rss_before / 2**20), "server_rss_mb_after": round(rss_after / 2**20),
        "results": rows, "command": "benchmarks/serving_concurrency.py " + " ".join(argv or sys.argv[1:]),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.workers} server workers, {args.query_seconds:g} s WAV queries, {args.seconds:g} s per level; "
          f"server memory {out['server_rss_mb_before']} -> {out['server_rss_mb_after']} MB\n")
    print("| clients | requests | errors | requests/s | p50 ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['requests_per_s']} | {r['p50_ms']} | "
              f"{r['p99_ms']} | {r['max_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
