"""Embedder throughput: clips per second for each embedder at several batch sizes.

    .venv/bin/python benchmarks/embedders.py [--size default|tiny] [--batch-sizes 1,8,32] [--clips 32]
                                             [--embedders mel,clap-laion,clap-transformers,wav2vec2]
                                             [--device auto] [--threads N] [--json]
                                             [--files 16] [--format flac] [--decode-workers 0,8]
                                             [--resample-on-device]

No weights are downloaded: each learned embedder is a randomly initialised model of the real
architecture, saved in the real checkpoint format in a temporary directory and loaded through
``create_embedder``, exactly as a real checkpoint would be. Random weights run as fast as trained
ones, so the numbers hold for the real models of the same size:

  ``--size default``  clap-laion: LAION HTSAT-base + RoBERTa-base (the music checkpoint's shape);
                      clap-transformers: ``ClapConfig()`` (laion/clap-htsat-unfused's shape);
                      wav2vec2: ``Wav2Vec2Config()`` (wav2vec2-base), pooled layer 6 of 12.
  ``--size tiny``     the small configs the tests use (a smoke run).

Measured per embedder and batch size: ``embed`` on in-memory 10 s clips (``--clips`` of them,
after one warm-up batch); and, at the largest batch size, end to end over ``--files`` generated
120 s files at 44.1 kHz in ``--format`` (decode, resample, chunk, flags, embed) through
:func:`soundalike.extract.extract_tracks` -- the embed stage's code -- once per
``--decode-workers`` value (0: each file in turn; N: N threads decode ahead while the GPU embeds),
side by side in one run; with ``--resample-on-device`` each run with decode threads is repeated
with ``resample_on_device=True`` (the threads decode, the device resamples). The device (CPU
model and torch threads, or the GPU's name) is reported
with the results; a markdown table goes to stdout, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from soundalike.config import ClipsConfig, EmbedderConfig
from soundalike.embedders import create_embedder
from soundalike.embedders.clap import LAION_CHECKPOINT, build_laion_model
from soundalike.extract import extract_tracks
from soundalike.sample import STYLES, synthesize_track

CLIP_S = 10.0
TRACK_S = 120.0
EMBEDDERS = ("mel", "clap-laion", "clap-transformers", "wav2vec2")


def save_models(root: Path, size: str, names=EMBEDDERS) -> dict[str, EmbedderConfig]:
    """Random-weight checkpoints in the real formats under ``root`` for ``names``; the config that loads each."""
    torch.manual_seed(0)
    tiny = size == "tiny"
    configs = {"mel": EmbedderConfig(name="mel")}
    laion = root / "clap-laion"
    amodel = "HTSAT-tiny" if tiny else "HTSAT-base"
    if "clap-laion" in names:
        _save_laion(laion, tiny, amodel)
        configs["clap-laion"] = EmbedderConfig(name="clap", weights_path=str(laion), options={"amodel": amodel})
    hf = root / "clap-transformers"
    if "clap-transformers" in names:
        _save_hf_clap(hf, tiny)
        configs["clap-transformers"] = EmbedderConfig(name="clap", weights_path=str(hf))
    w2v = root / "wav2vec2"
    if "wav2vec2" in names:
        _save_wav2vec2(w2v, tiny)
        configs["wav2vec2"] = EmbedderConfig(name="wav2vec2", weights_path=str(w2v))
    return configs


def _save_laion(laion: Path, tiny: bool, amodel: str) -> None:
    from transformers import RobertaConfig

    roberta = (RobertaConfig(vocab_size=300, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                             intermediate_size=64, max_position_embeddings=80)
               if tiny else RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                          layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2))
    roberta.save_pretrained(laion / "roberta-base")
    torch.save({"epoch": 15, "state_dict": build_laion_model(amodel, roberta).state_dict()}, laion / LAION_CHECKPOINT)


def _save_hf_clap(hf: Path, tiny: bool) -> None:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    if tiny:
        config = ClapConfig(
            audio_config=dict(window_size=8, depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32,
                              patch_embeds_hidden_size=16, projection_dim=24),
            text_config=dict(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=37, projection_dim=24), projection_dim=24)
    else:
        config = ClapConfig()
    ClapModel(config).save_pretrained(hf)
    ClapFeatureExtractor().save_pretrained(hf)


def _save_wav2vec2(w2v: Path, tiny: bool) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    wconfig = (Wav2Vec2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                              conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
               if tiny else Wav2Vec2Config())
    Wav2Vec2Model(wconfig).save_pretrained(w2v)
    Wav2Vec2FeatureExtractor().save_pretrained(w2v)


def device_description(device: str) -> str:
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_embed(embedder, batch_sizes: list[int], n_clips: int) -> dict[int, float]:
    """clips/s of ``embedder.embed`` on ``n_clips`` distinct-enough 10 s clips, per batch size."""
    sr = embedder.sample_rate_hz
    base = np.stack([synthesize_track(STYLES[i % len(STYLES)], duration_s=CLIP_S, sample_rate_hz=sr, seed=i)
                     for i in range(min(n_clips, 8))])
    clips = np.resize(base, (n_clips, base.shape[1])).astype(np.float32)
    out = {}
    for b in batch_sizes:
        embedder.embed(clips[:b])  # warm-up: kernels, allocator, lazy init
        _sync()
        start = time.perf_counter()
        for i in range(0, n_clips, b):
            embedder.embed(clips[i : i + b])
        _sync()
        out[b] = n_clips / (time.perf_counter() - start)
    return out


def make_files(root: Path, n_files: int, fmt: str) -> list[Path]:
    """``n_files`` 120 s files at 44.1 kHz: 8 distinct renderings, copied (decoding costs the same)."""
    distinct = []
    for i in range(min(8, n_files)):
        path = root / f"track{i:03d}.{fmt}"
        wave = synthesize_track(STYLES[i % len(STYLES)], duration_s=TRACK_S, sample_rate_hz=44100, seed=i)
        sf.write(path, wave, 44100, format=fmt.upper(), subtype="PCM_16" if fmt in ("wav", "flac") else None)
        distinct.append(path)
    files = list(distinct)
    for i in range(len(distinct), n_files):
        path = root / f"track{i:03d}.{fmt}"
        path.write_bytes(distinct[i % len(distinct)].read_bytes())
        files.append(path)
    return files


def bench_end_to_end(embedder, files: list[Path], batch_size: int, decode_workers: int,
                     resample_on_device: bool = False) -> float:
    """clips/s of ``extract_tracks`` (decode → resample → chunk → flags → embed) over ``files``."""
    clips_cfg = ClipsConfig()
    kw = dict(batch_size=batch_size, decode_workers=decode_workers, resample_on_device=resample_on_device)
    for _, r in extract_tracks(files[:2], embedder, clips_cfg, **kw):
        if isinstance(r, Exception):  # warm-up
            raise r
    _sync()
    start = time.perf_counter()
    n = 0
    for _, r in extract_tracks(files, embedder, clips_cfg, **kw):
        if isinstance(r, Exception):
            raise r
        n += len(r)
    _sync()
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("default", "tiny"), default="default")
    ap.add_argument("--embedders", default=",".join(EMBEDDERS), help="comma-separated subset of %(default)s")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--clips", type=int, default=32, help="clips embedded per measurement")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--files", type=int, default=16, help="120 s files in the end-to-end run")
    ap.add_argument("--format", default="flac", choices=("flac", "wav", "ogg", "mp3"))
    ap.add_argument("--decode-workers", default="0,8", help="end-to-end runs, one per value")
    ap.add_argument("--resample-on-device", action="store_true",
                    help="repeat the runs with decode threads with embedder.resample_on_device")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.embedders.split(",") if n]
    unknown = sorted(set(names) - set(EMBEDDERS))
    if unknown:
        ap.error(f"unknown embedders {unknown}; known: {', '.join(EMBEDDERS)}")
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    n_clips = max(args.clips, max(batch_sizes))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        configs = save_models(root, args.size, names)
        setup_s = time.perf_counter() - started
        files = make_files(root, args.files, args.format)
        workers = sorted({int(w) for w in args.decode_workers.split(",")})
        for name in names:
            cfg = configs[name]
            cfg = EmbedderConfig(name=cfg.name, weights_path=cfg.weights_path, options=cfg.options,
                                 device=args.device, batch_size=max(batch_sizes))
            t0 = time.perf_counter()
            embedder = create_embedder(cfg, clip_s=CLIP_S)
            load_s = time.perf_counter() - t0
            rates = bench_embed(embedder, batch_sizes, n_clips)
            e2e = {str(w): round(bench_end_to_end(embedder, files, max(batch_sizes), w), 2) for w in workers}
            if args.resample_on_device:
                e2e.update({f"{w}+device_resample": round(bench_end_to_end(embedder, files, max(batch_sizes), w,
                                                                           resample_on_device=True), 2)
                            for w in workers if w > 0})
            rows.append({
                "embedder": name, "key": embedder.key, "dim": embedder.dim, "sample_rate_hz": embedder.sample_rate_hz,
                "load_s": round(load_s, 2), "clips_per_s": {str(b): round(r, 2) for b, r in rates.items()},
                "end_to_end_clips_per_s_by_decode_workers": e2e, "end_to_end_batch_size": max(batch_sizes),
            })
            if not args.json:
                print(f"  {name}: done", file=sys.stderr, flush=True)
    summary = {
        "device": device_description(args.device), "size": args.size, "clips": n_clips, "clip_s": CLIP_S,
        "model_setup_s": round(setup_s, 1), "files": args.files, "format": args.format, "results": rows,
        "command": "benchmarks/embedders.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"Device: {summary['device']}; random-init models, size {args.size}; {n_clips} clips of {CLIP_S:g} s\n")
    head = " | ".join(f"batch {b}" for b in batch_sizes)
    e2e_keys = list(rows[0]["end_to_end_clips_per_s_by_decode_workers"]) if rows else []
    e2e_head = " | ".join(f"end to end, {k} decode workers" for k in e2e_keys)
    print(f"| embedder | dim | {head} | {e2e_head} |")
    print("| --- | --- | " + " | ".join("---" for _ in batch_sizes + e2e_keys) + " |")
    for r in rows:
        cells = " | ".join(f"{r['clips_per_s'][str(b)]:.1f}" for b in batch_sizes)
        e2e_cells = " | ".join(f"{r['end_to_end_clips_per_s_by_decode_workers'][k]:.1f}" for k in e2e_keys)
        print(f"| {r['embedder']} | {r['dim']} | {cells} | {e2e_cells} |")
    print(f"\n(clips/s; end to end over {args.files} files of {TRACK_S:g} s, {args.format} at 44.1 kHz, "
          f"batch {max(batch_sizes)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
