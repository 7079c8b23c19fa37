"""Clip flags with and without the tonal test skipped where it decides nothing (issue #3).

    .venv/bin/python benchmarks/flags_cost.py [--catalogue work/bench_pipeline_1600/catalogue]
        [--tracks 150] [--rounds 3] [--json]

On the first ``--tracks`` files of a generated catalogue (``pipeline_throughput.py`` makes one),
one thread, side by side in one process:

- ``clip_flags`` on the clips' shared spectrogram, batches of 32 (the embed batch), with
  ``decisive_only`` off and on: ms per clip, and the share of clips whose tonality decides
  their flag (neither silent nor below ``noise_flatness``);
- the core path (``extract_track``: decode, chunk, flags, mel embed) with each setting against
  decode-only (``load_audio``), the best of ``--rounds`` interleaved rounds: the ratio the
  pipeline target is about.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import soundalike.extract as extract
from soundalike.audio import load_audio
from soundalike.catalogue import scan_catalogue
from soundalike.clips import chunk
from soundalike.config import load_config
from soundalike.embedders import create_embedder
from soundalike.features import stft_power
from soundalike.flags import analysis_frame, clip_flags

ROOT = Path(__file__).resolve().parents[1]


def _flags_with(decisive_only: bool):
    """extract's flag step with ``decisive_only`` fixed (what extract_track calls per batch)."""

    def flags(audio, sr, cfg, real, power):
        return clip_flags(audio, sr, silence_rms_db=cfg.silence_rms_db, noise_flatness=cfg.noise_flatness,
                          noise_tonality_max=cfg.noise_tonality_max, real_samples=real, power=power,
                          decisive_only=decisive_only)

    return flags


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogue", type=Path, default=Path("work/bench_pipeline_1600/catalogue"))
    ap.add_argument("--tracks", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "conf" / "local.yaml")
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    sr = embedder.sample_rate_hz
    files = sorted(f.path for f in scan_catalogue(args.catalogue, extensions=cfg.catalogue.extensions))[: args.tracks]
    if not files:
        ap.error(f"no audio under {args.catalogue}; run benchmarks/pipeline_throughput.py first")

    clips = np.concatenate([chunk(load_audio(f, sr), sr, clip_s=cfg.clips.clip_s, hop_s=cfg.clips.hop_s,
                                  min_tail_s=cfg.clips.min_tail_s).audio for f in files])
    n_fft, hop = analysis_frame(sr)
    batches = [clips[a : a + 32] for a in range(0, len(clips), 32)]
    powers = [stft_power(torch.from_numpy(b), n_fft=n_fft, hop_length=hop) for b in batches]
    flag_ms, decisive = {}, 0
    for lazy in (False, True):
        t0 = time.process_time()
        for b, p in zip(batches, powers):
            f = _flags_with(lazy)(b, sr, cfg.clips, None, p)
            if lazy:
                decisive += int((~np.isnan(f.tonality)).sum())
        flag_ms[lazy] = (time.process_time() - t0) / len(clips) * 1e3

    seconds = {"decode": [], False: [], True: []}
    original = extract._flags
    try:
        for _ in range(args.rounds):
            t0 = time.process_time()
            for f in files:
                load_audio(f, sr)
            seconds["decode"].append(time.process_time() - t0)
            for lazy in (False, True):
                extract._flags = _flags_with(lazy)
                t0 = time.process_time()
                for f in files:
                    extract.extract_track(f, embedder, cfg.clips, batch_size=cfg.embedder.batch_size)
                seconds[lazy].append(time.process_time() - t0)
    finally:
        extract._flags = original
    best = {k: min(v) for k, v in seconds.items()}
    out = {
        "tracks": len(files), "clips": len(clips),
        "flags_ms_per_clip": {"all_tonality": round(flag_ms[False], 3), "decisive_only": round(flag_ms[True], 3)},
        "decisive_share": round(decisive / len(clips), 3),
        "cpu_seconds_best_of_rounds": {"decode_only": round(best["decode"], 2),
                                       "core_path_all_tonality": round(best[False], 2),
                                       "core_path_decisive_only": round(best[True], 2)},
        "core_path_vs_decode_only": {"all_tonality": round(best["decode"] / best[False], 3),
                                     "decisive_only": round(best["decode"] / best[True], 3)},
    }
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        for key, value in out.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
