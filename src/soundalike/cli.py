"""The ``soundalike`` command line: one entry point, one subcommand per stage.

Every subcommand has ``--json`` for machine-readable output. Errors a user can cause print as
one line on stderr with exit code 2; nothing else is caught, so bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from soundalike.errors import SoundalikeError

Handler = Callable[[argparse.Namespace], int]


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", default="conf/local.yaml", help="YAML profile (default: %(default)s)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set clips.hop_s=5 (repeatable)",
    )


def _print_json(payload: object) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------- compare


def _compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="frame-wise mel cosine similarity of two tracks",
        description="Compare two tracks: frame-wise cosine similarity of normalised log-mel spectrograms.",
    )
    p.add_argument("a", help="first audio file")
    p.add_argument("b", help="second audio file")
    p.add_argument("--seconds", type=float, default=15.0,
                   help="compare this many seconds from the start; 0 = whole tracks (default: %(default)s)")
    p.add_argument("--sr", type=int, default=44100, help="decode sample rate, Hz (default: %(default)s)")
    p.add_argument("--align", action="store_true",
                   help="find the time offset of B that maximises similarity, and compare there")
    p.add_argument("--max-offset", type=float, default=None, metavar="SECONDS",
                   help="with --align: largest offset searched (default: any with 50%% overlap)")
    p.add_argument("--fmax", type=float, default=16000.0, metavar="HZ",
                   help="highest mel band edge, capped at Nyquist (default: %(default)s)")
    p.add_argument("--plot", metavar="PNG", help="write spectrograms and the similarity curve to this PNG")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    import dataclasses

    from soundalike.compare import COMPARE_MEL, compare_files, plot_comparison

    result = compare_files(
        args.a,
        args.b,
        seconds=args.seconds,
        sr=args.sr,
        align=args.align,
        max_offset_s=args.max_offset,
        params=dataclasses.replace(COMPARE_MEL, fmax_hz=args.fmax),
    )
    if args.plot:
        plot_comparison(result, args.plot, label_a=args.a, label_b=args.b)
    if args.json:
        payload = result.to_json()
        if args.plot:
            payload["plot"] = str(args.plot)
        _print_json(payload)
    else:
        offset = f", B offset {result.offset_s:+.3f} s" if args.align else ""
        print(f"mean cosine {result.mean_cosine:.4f} over {result.frames} frames{offset}")
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


# --------------------------------------------------------------------------- sample-catalogue


def _sample_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample-catalogue",
        help="synthesise a deterministic demo/test catalogue",
        description="Write N synthetic music-like tracks in mixed formats plus a catalogue.json sidecar.",
    )
    p.add_argument("dir", help="output directory")
    p.add_argument("--tracks", type=int, default=24, help="number of tracks (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=30.0, help="shortest track (default: %(default)s)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest track (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the written metadata as JSON")
    p.set_defaults(handler=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    import dataclasses

    from soundalike.errors import ParameterError
    from soundalike.sample import generate_catalogue

    try:
        tracks = generate_catalogue(
            args.dir,
            n_tracks=args.tracks,
            seed=args.seed,
            min_duration_s=args.min_seconds,
            max_duration_s=args.max_seconds,
            progress=not args.json,
        )
    except ValueError as exc:
        if isinstance(exc, SoundalikeError):
            raise
        raise ParameterError(str(exc)) from None
    if args.json:
        _print_json({"dir": str(args.dir), "tracks": [dataclasses.asdict(t) for t in tracks]})
    else:
        total = sum(t.duration_s for t in tracks)
        styles = sorted({t.style for t in tracks})
        print(f"wrote {len(tracks)} tracks ({total / 60:.1f} min, styles: {', '.join(styles)}) to {args.dir}")
    return 0


# --------------------------------------------------------------------------- pipeline stages


def _stage_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the stage summaries as JSON")
    p.set_defaults(handler=_run_stages, stages=None if name == "pipeline" else [name])
    return p


def _pipeline_parsers(sub: argparse._SubParsersAction) -> None:
    p = _stage_parser(sub, "pipeline", "run the catalogue pipeline stages in order (local Spark + Delta)")
    p.add_argument("--stages", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
                   help="comma-separated subset of stages (default: all)")
    _stage_parser(sub, "ingest", "scan the catalogue into the tracks table (incremental)")
    _stage_parser(sub, "embed", "cut, flag and embed new tracks into the clips and embeddings tables")


def _run_stages(args: argparse.Namespace) -> int:
    from soundalike.config import load_config
    from soundalike_pipelines.runner import run_pipeline

    cfg = load_config(args.conf, args.overrides)
    stages = args.stages
    echo = None if args.json else (lambda line: print(line, flush=True))
    results = run_pipeline(cfg, stages, echo=echo)
    if args.json:
        _print_json(results)
    return 0


# --------------------------------------------------------------------------- main

_PARSERS = (_compare_parser, _sample_parser, _pipeline_parsers)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests and the bundle checks)."""
    from soundalike import __version__

    parser = argparse.ArgumentParser(
        prog="soundalike", description="Audio similarity search for music catalogues."
    )
    parser.add_argument("--version", action="version", version=f"soundalike {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SoundalikeError as exc:
        print(f"soundalike {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"soundalike {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
