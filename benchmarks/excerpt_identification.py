"""Excerpt identification per degradation, with and without the fingerprint index (issue #12).

    .venv/bin/python benchmarks/excerpt_identification.py DIR [--excerpts 120] [--modes embedding fused] [--json]

Builds the index of every audio file under DIR in this process (the same core calls as the
pipeline's embed and index stages: ``extract_track`` → ``build_index``, and
``fingerprint.build_fingerprint_index``; no Spark, no MLflow), then runs
:func:`soundalike.evaluation.evaluate`'s excerpt measure: 10–30 s excerpts at offsets off the clip
grid, each through one degradation (:data:`soundalike.degrade.DEGRADATIONS`, cycled), queried
through ``Searcher.search``. ``embedding`` is the query path before issue #12 (fingerprint
disabled); ``fused`` adds fingerprint evidence. DIR may be the sample catalogue or any folder of
music (e.g. ``/usr/share/games``: the supertux / hedgewars ogg soundtracks).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from soundalike.audio import probe_audio
from soundalike.catalogue import read_sidecar, scan_catalogue
from soundalike.config import load_config
from soundalike.embedders import create_embedder
from soundalike.errors import SoundalikeError
from soundalike.evaluation import EvalTrack, evaluate
from soundalike.extract import extract_track
from soundalike.index import build_index
from soundalike.search import Searcher


def build_searchers(root: Path, cfg, *, min_s: float, max_tracks: int | None):
    embedder = create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    files = sorted(scan_catalogue(root, extensions=cfg.catalogue.extensions), key=lambda f: f.path)
    # The sidecar's style and motif (the sample catalogue has them), for the tag and version measures.
    sidecar = read_sidecar(root, cfg.catalogue.metadata_file)
    tracks, vectors, tids, cidx, starts, paths = [], [], [], [], [], {}
    for f in tqdm(files, desc="index", unit="track"):
        try:
            info = probe_audio(f.path)
            if info.duration_s < min_s:
                continue
            clips = extract_track(f.path, embedder, cfg.clips)
        except SoundalikeError as exc:
            print(f"skip {f.path}: {exc}", file=sys.stderr)
            continue
        tid = hashlib.sha256(Path(f.path).read_bytes()).hexdigest()
        if tid in paths or len(clips) == 0:
            continue
        keep = clips.indexable if clips.indexable.any() else np.ones(len(clips), bool)
        paths[tid] = f.path
        meta = sidecar.get(str(Path(f.path).resolve()), {})
        tracks.append(EvalTrack(tid, f.path, float(info.duration_s), meta.get("style"), meta.get("motif_id")))
        vectors.append(clips.vectors[keep])
        tids += [tid] * int(keep.sum())
        cidx += list(np.flatnonzero(keep))
        starts += list(clips.start_s[keep])
        if max_tracks and len(tracks) >= max_tracks:
            break
    index = build_index(np.concatenate(vectors), np.array(tids, object), np.array(cidx), np.array(starts),
                        embedder=embedder.key, factory="Flat")
    meta = pd.DataFrame({"track_id": list(paths), "path": list(paths.values()),
                         "title": [Path(p).stem for p in paths.values()], "tags": [[] for _ in paths]})
    searchers = {"embedding": Searcher(embedder, index, meta, cfg.clips, dataclasses.replace(cfg.query),
                                       cfg.embedder.batch_size)}
    try:
        from soundalike.fingerprint import build_fingerprint_index
    except ImportError:  # before issue #12
        return tracks, searchers, {}
    t0 = time.perf_counter()
    fp = build_fingerprint_index({tid: p for tid, p in paths.items()}, cfg.fingerprint, progress=True)
    build = {"fingerprint_build_s": round(time.perf_counter() - t0, 2), "fingerprint_entries": len(fp)}
    searchers["fused"] = Searcher(embedder, index, meta, cfg.clips, cfg.query, cfg.embedder.batch_size,
                                  fingerprints=fp, fingerprint_cfg=cfg.fingerprint)
    return tracks, searchers, build


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--excerpts", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-seconds", type=float, default=20.0, help="skip shorter files (jingles, effects)")
    ap.add_argument("--max-tracks", type=int, default=None)
    ap.add_argument("--modes", nargs="+", default=["embedding", "fused"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(None, args.overrides)
    tracks, searchers, build = build_searchers(args.dir, cfg, min_s=args.min_seconds, max_tracks=args.max_tracks)
    out = {"tracks": len(tracks), "minutes": round(sum(t.duration_s for t in tracks) / 60, 1), **build, "modes": {}}
    for mode in args.modes:
        if mode not in searchers:
            continue
        t0 = time.perf_counter()
        summary = evaluate(searchers[mode].search, tracks, n_excerpts=args.excerpts, seed=args.seed,
                           hop_s=cfg.clips.hop_s, progress=not args.json)
        ex = summary["excerpts"]
        out["modes"][mode] = {
            "overall": ex["overall"], "by_degradation": ex["by_degradation"],
            "seconds_per_query": round((time.perf_counter() - t0) / max(1, args.excerpts), 3),
            # Style precision@5 and alternate-take MRR (None without sidecar tags / motifs).
            "tags": summary["tags"], "versions": summary["versions"],
        }
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"{out['tracks']} tracks, {out['minutes']} min; {args.excerpts} excerpts, seed {args.seed}")
    names = list(next(iter(out["modes"].values()))["by_degradation"])
    print(f"{'degradation':<30}" + "".join(f"{m:>16}" for m in out["modes"]))
    for name in names + ["overall"]:
        cells = []
        for m in out["modes"].values():
            r = m["overall"] if name == "overall" else m["by_degradation"][name]
            cells.append(f"{r['top1']:.3f} (n={r['n']})")
        print(f"{name:<30}" + "".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
