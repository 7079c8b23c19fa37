"""Pipeline throughput on the sample catalogue: decode-only vs the core path vs Spark.

    .venv/bin/python benchmarks/pipeline_throughput.py --tracks 48 --cores 2 [--json]
        [--embedder mel|clap-laion|clap-transformers|wav2vec2] [--size default|tiny]

The learned embedders run randomly initialised models of the real architectures (``--size
default``: the real checkpoints' shapes, so the real FLOPs), saved in the real formats under the
work dir by ``benchmarks/embedders.py`` and loaded through ``create_embedder``; nothing is
downloaded. ``--set embedder.weights_path=...`` uses real weights instead.

Measures, on the same files:
  decode   load_audio at the embedder's rate, one process, one thread; and again in --cores
           processes at once (the cores the Spark stage gets), so the per-core baseline carries
           the same contention (shared caches, memory bandwidth, clock) as the pipeline
  core     extract_track (decode, chunk, flags, mel embed), one process, one thread
  spark    the embed stage (mapInArrow into Delta) with local[cores], and the whole
           ingest + embed run including the Spark session start
Throughput is "x real time per core": seconds of audio processed per second of one core.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from soundalike.audio import load_audio
from soundalike.catalogue import scan_catalogue
from soundalike.config import load_config
from soundalike.embedders import create_embedder
from soundalike.extract import extract_track
from soundalike.sample import generate_catalogue

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedders import EMBEDDERS, save_models  # noqa: E402  (benchmarks/embedders.py)


def _decode_seconds(files: list[str], sr: int) -> float:
    """Seconds of audio in ``files``, decoded in this process (one thread)."""
    torch.set_num_threads(1)
    return sum(load_audio(f, sr).shape[0] / sr for f in files)


def decode_parallel(files: list[str], sr: int, processes: int) -> float:
    """Wall seconds to decode ``files`` in ``processes`` worker processes, longest files spread."""
    order = sorted(files, key=lambda f: -Path(f).stat().st_size)
    shares = [order[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_decode_seconds, [[files[0]]] * processes, [sr] * processes))  # start-up and imports
        t0 = time.perf_counter()
        list(pool.map(_decode_seconds, shares, [sr] * processes))
        return time.perf_counter() - t0


def embedder_overrides(name: str, size: str, root: Path, *, given: bool) -> list[str]:
    """``--set`` values that load ``name``: random weights saved once under ``root/size``."""
    out = [f"embedder.name={name.split('-')[0]}"]  # clap-laion and clap-transformers are both `clap`
    if name == "mel" or given:
        return out
    marker = root / size / f"{name}.done"
    if not marker.exists():
        save_models(root / size, size, names=(name,))
        marker.touch()
    out.append(f"embedder.weights_path={root / size / name}")
    if name == "clap-laion":
        out.append(f"embedder.options.amodel={'HTSAT-tiny' if size == 'tiny' else 'HTSAT-base'}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", default="work/bench_pipeline")
    ap.add_argument("--embedder", default="mel", choices=EMBEDDERS)
    ap.add_argument("--size", default="default", choices=("default", "tiny"),
                    help="shape of the random-weight learned embedders (default: the real models' shapes)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    work = Path(args.workdir).resolve()
    catalogue = work / "catalogue"
    if not (catalogue / "catalogue.json").exists():
        generate_catalogue(catalogue, n_tracks=args.tracks, seed=args.seed, progress=not args.json)
    shutil.rmtree(work / "pipeline", ignore_errors=True)
    cfg = load_config(ROOT / "conf" / "local.yaml", [
        f"workdir={work / 'pipeline'}", f"catalogue.path={catalogue}", f"spark.master=local[{args.cores}]",
        "tables.schema=bench", *embedder_overrides(args.embedder, args.size, work / "weights",
                                                  given=any(o.startswith("embedder.") for o in args.overrides)),
        *args.overrides,
    ])
    files = [f.path for f in scan_catalogue(catalogue, extensions=cfg.catalogue.extensions)]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    load_s = time.perf_counter() - t0  # each Spark Python worker pays this once too
    sr = embedder.sample_rate_hz

    t0 = time.perf_counter()
    audio_s = _decode_seconds(files, sr)
    decode_s = time.perf_counter() - t0
    decode_par_s = decode_parallel(files, sr, args.cores)

    t0 = time.perf_counter()
    clips = sum(len(extract_track(f, embedder, cfg.clips, batch_size=cfg.embedder.batch_size)) for f in files)
    core_s = time.perf_counter() - t0

    from soundalike_pipelines.ingest import run_ingest
    from soundalike_pipelines.embed import run_embed
    from soundalike_pipelines.session import get_spark

    t0 = time.perf_counter()
    spark = get_spark(cfg)
    spark.range(1).count()
    startup_s = time.perf_counter() - t0
    ingest = run_ingest(cfg, spark)
    embed = run_embed(cfg, spark)
    whole_s = time.perf_counter() - t0
    assert embed.clips == clips, (embed.clips, clips)

    per_core = lambda seconds, cores=1: audio_s / (seconds * cores)  # noqa: E731
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {args.cores} cores used",
        "embedder": embedder.key,
        "embedder_form": args.embedder if args.embedder == "mel" else f"{args.embedder} ({args.size})",
        "files": len(files),
        "audio_s": round(audio_s, 1),
        "clips": clips,
        "decode_only_x_rt_per_core": round(per_core(decode_s), 1),
        f"decode_only_{args.cores}_processes_x_rt_per_core": round(per_core(decode_par_s, args.cores), 1),
        "core_path_x_rt_per_core": round(per_core(core_s), 1),
        "spark_embed_stage_x_rt_per_core": round(per_core(embed.seconds, args.cores), 1),
        "spark_whole_run_x_rt_per_core": round(per_core(whole_s, args.cores), 1),
        "seconds": {"decode_only": round(decode_s, 2), f"decode_only_{args.cores}_processes": round(decode_par_s, 2),
                    "embedder_load": round(load_s, 2), "core_path": round(core_s, 2), "spark_start": round(startup_s, 2),
                    "ingest_stage": ingest.seconds, "embed_stage": embed.seconds,
                    "embed_phases": embed.phase_seconds, "whole_run": round(whole_s, 2)},
    }
    stage = result["spark_embed_stage_x_rt_per_core"]
    result["embed_stage_vs_decode_only"] = round(stage / result["decode_only_x_rt_per_core"], 3)
    result[f"embed_stage_vs_decode_only_{args.cores}_processes"] = round(
        stage / result[f"decode_only_{args.cores}_processes_x_rt_per_core"], 3)
    result["spark_overhead_vs_core_path"] = round(1 - result["spark_embed_stage_x_rt_per_core"] / result["core_path_x_rt_per_core"], 3)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        for key, value in result.items():
            print(f"{key:36} {value}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
