"""Where the GPU embed path's time goes on the CPU side: decode threads alone, and the consuming
thread's per-batch work.

    python3 benchmarks/decode_threads.py [--files 160] [--workers 1,8,15] [--sr 48000] [--batch 256] [--json]

1. Decode-only: ``--files`` generated 120 s FLAC files at 44.1 kHz are decoded, resampled to
   ``--sr`` and cut into 10 s clips by the decode function :func:`soundalike.extract.extract_tracks`
   runs in its threads, with 1 / 8 / 15 threads and nothing else running: clips/s and × real time.
2. The consuming thread's work per batch of ``--batch`` clips, timed alone: copying clips into
   the staging buffer and the flags' level measure (numpy), i.e. what it does besides waiting
   for the model.

3. One decode thread's work split into its steps, on the first 8 files, one thread: the codec
   (libsndfile reading FLAC to float32), the resampler (soxr HQ to ``--sr``) and the rest
   (down-mix, cutting into clips). From the split: the decode-only ceiling if the resampling
   moved off the CPU (e.g. onto the GPU), scaled from the measured multi-thread rate.

If decode-only is far above the end-to-end rate of ``benchmarks/embedders.py``, the decode
threads are not the limit; the consuming thread is.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from soundalike.config import ClipsConfig
from soundalike.extract import _decode_track
from soundalike.flags import _rms_db

sys.path.insert(0, str(Path(__file__).parent))
from embedders import make_files  # noqa: E402


def _split(files, sr: int, cfg: ClipsConfig) -> dict:
    """Milliseconds per 10 s clip for codec, resampler and the rest of ``_decode_track``, one thread."""
    codec = resample = whole = 0.0
    clips = 0
    for f in files:
        t0 = time.perf_counter()
        wave, native = sf.read(f, dtype="float32", always_2d=True)
        t1 = time.perf_counter()
        soxr.resample(wave.mean(axis=1), native, sr)
        t2 = time.perf_counter()
        clips += _decode_track(f, sr, cfg, 600.0).audio.shape[0]
        t3 = time.perf_counter()
        codec, resample, whole = codec + t1 - t0, resample + t2 - t1, whole + t3 - t2
    per = lambda s: round(s / clips * 1000, 2)  # noqa: E731
    return {"codec_ms_per_clip": per(codec), "resample_ms_per_clip": per(resample),
            "rest_ms_per_clip": per(max(0.0, whole - codec - resample)), "decode_ms_per_clip": per(whole),
            "resample_share": round(resample / whole, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=160)
    ap.add_argument("--workers", default="1,8,15")
    ap.add_argument("--sr", type=int, default=48000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = ClipsConfig()
    out = {"files": args.files, "sr": args.sr, "decode_only": {}, "command": "benchmarks/decode_threads.py " +
           " ".join(argv if argv is not None else sys.argv[1:])}
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.files, "flac")
        _decode_track(files[0], args.sr, cfg, 600.0)  # warm-up
        for w in sorted({int(x) for x in args.workers.split(",")}):
            start = time.perf_counter()
            with ThreadPoolExecutor(w) as pool:
                n = sum(d.audio.shape[0] for d in pool.map(lambda f: _decode_track(f, args.sr, cfg, 600.0), files))
            seconds = time.perf_counter() - start
            out["decode_only"][str(w)] = {"clips_per_s": round(n / seconds, 1),
                                          "x_real_time": round(n * cfg.clip_s / seconds, 1)}
        clips = _decode_track(files[0], args.sr, cfg, 600.0).audio
        batch = np.resize(clips, (args.batch, clips.shape[1])).astype(np.float32)
        staging = np.empty_like(batch)
        real = np.full(args.batch, batch.shape[1], np.int64)
        t0 = time.perf_counter()
        for _ in range(5):
            staging[:] = batch
        copy_ms = (time.perf_counter() - t0) / 5 * 1000
        t0 = time.perf_counter()
        for _ in range(5):
            _rms_db(staging, real)
        rms_ms = (time.perf_counter() - t0) / 5 * 1000
        out["per_batch_ms"] = {"staging_copy": round(copy_ms, 1), "level_measure": round(rms_ms, 1)}
        out["one_thread_split"] = split = _split(files[:8], args.sr, cfg)
        most = max(out["decode_only"], key=int)
        out["ceiling_without_cpu_resampling_clips_per_s"] = {
            most: round(out["decode_only"][most]["clips_per_s"] / (1 - split["resample_share"]), 1)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for w, r in out["decode_only"].items():
            print(f"decode-only, {w} threads: {r['clips_per_s']} clips/s ({r['x_real_time']}x real time)")
        print(f"consuming thread per batch of {args.batch}: {out['per_batch_ms']}")
        print(f"one decode thread, per clip: {out['one_thread_split']}")
        print(f"decode-only ceiling with resampling off the CPU: {out['ceiling_without_cpu_resampling_clips_per_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
