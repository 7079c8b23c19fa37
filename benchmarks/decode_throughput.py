"""Decode throughput per format: x real time per core, at the rate the embedder wants.

    .venv/bin/python benchmarks/decode_throughput.py [--seconds 60] [--repeats 5] [--sr 22050] [--json]

One synthesised track (44.1 kHz stereo) is encoded as wav, flac, ogg/vorbis and mp3 (libsndfile),
and m4a/aac (ffmpeg, when on PATH); each is decoded with soundalike.audio.load_audio (mono mix +
soxr resampling to --sr) --repeats times in one thread. x RT = audio seconds / decode seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from soundalike.audio import load_audio
from soundalike.sample import synthesize_track


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sr", type=int, default=22050)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    wave = synthesize_track("drum_and_bass", duration_s=args.seconds, sample_rate_hz=44100, seed=1)
    stereo = np.stack([wave, np.roll(wave, 100)], axis=1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for fmt, kwargs in (("wav", {"subtype": "PCM_16"}), ("flac", {}), ("ogg", {"subtype": "VORBIS"}), ("mp3", {})):
            path = Path(tmp, f"x.{fmt}")
            with sf.SoundFile(path, "w", 44100, 2, format=fmt.upper(), **kwargs) as f:
                for a in range(0, len(stereo), 65536):  # blocks: libvorbis crashes on long single writes
                    f.write(stereo[a : a + 65536])
            files[fmt] = path
        if shutil.which("ffmpeg"):
            files["m4a"] = Path(tmp, "x.m4a")
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(files["wav"]), "-c:a", "aac",
                            "-b:a", "192k", str(files["m4a"])], check=True)
        for fmt, path in files.items():
            load_audio(path, args.sr)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                load_audio(path, args.sr)
            seconds = (time.perf_counter() - t0) / args.repeats
            results[fmt] = {"x_rt_per_core": round(args.seconds / seconds, 1), "ms_per_10s_clip": round(seconds / args.seconds * 10 * 1000, 2)}
    report = {"source": f"{args.seconds:g} s, 44.1 kHz stereo", "decode_to_hz": args.sr, "formats": results}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"decode of {report['source']} to mono {args.sr} Hz, one thread")
        for fmt, r in results.items():
            print(f"  {fmt:5} {r['x_rt_per_core']:>8.1f} x real time   {r['ms_per_10s_clip']:>6.2f} ms per 10 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
