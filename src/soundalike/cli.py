"""The ``soundalike`` command line: one entry point, one subcommand per stage.

Every subcommand has ``--json`` for machine-readable output. Errors a user can cause print as
one line on stderr with exit code 2; nothing else is caught, so bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from soundalike.errors import SoundalikeError

Handler = Callable[[argparse.Namespace], int]


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--conf and --set, the same for every subcommand that reads the configuration."""
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
    p.add_argument("--plot", metavar="PNG",
                   help="write spectrograms and the similarity curve to this PNG (.png is added to a name without one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    import dataclasses

    from soundalike.compare import COMPARE_MEL, compare_files, plot_comparison, plot_path

    plot = plot_path(args.plot) if args.plot else None  # a bad name fails before the decoding
    result = compare_files(
        args.a,
        args.b,
        seconds=args.seconds,
        sr=args.sr,
        align=args.align,
        max_offset_s=args.max_offset,
        params=dataclasses.replace(COMPARE_MEL, fmax_hz=args.fmax),
    )
    if plot is not None:
        plot = plot_comparison(result, plot, label_a=args.a, label_b=args.b)
    if args.json:
        payload = result.to_json()
        if plot is not None:
            payload["plot"] = str(plot)
        _print_json(payload)
    else:
        offset = f", B offset {result.offset_s:+.3f} s" if args.align else ""
        print(f"mean cosine {result.mean_cosine:.4f} over {result.frames} frames{offset}")
        if plot is not None:
            print(f"plot written to {plot}")
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
    p.add_argument("--plant-duplicates", action="store_true",
                   help="also write planted duplicates (re-encodes, gain copies, trimmed/faded edits, exact copies) "
                        "with the truth in the sidecar's 'planted' field")
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
            plant_duplicates=args.plant_duplicates,
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
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the stage summaries as JSON")
    p.set_defaults(handler=_run_stages, stages=None if name == "pipeline" else [name])
    return p


def _pipeline_parsers(sub: argparse._SubParsersAction) -> None:
    p = _stage_parser(sub, "pipeline", "run the catalogue pipeline stages in order (local Spark + Delta)")
    p.add_argument("--stages", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
                   help="comma-separated subset of stages (default: all; an empty list is an error)")
    _stage_parser(sub, "ingest", "scan the catalogue into the tracks table (incremental)")
    _stage_parser(sub, "embed", "cut, flag and embed new tracks into the clips and embeddings tables")
    _stage_parser(sub, "index", "build the FAISS clip index and log it as an MLflow run")
    _stage_parser(sub, "evaluate", "measure the newest index (excerpts under degradations, tags, versions) and log it")
    _stage_parser(sub, "register", "register the newest index as the soundalike_search MLflow model")
    p = sub.add_parser(
        "duplicates",
        help="find duplicate recordings, edits and versions among the catalogue's tracks (incremental)",
        description="Compare new tracks with the catalogue (landmark votes on one offset, pitch sequences for "
                    "versions), update the duplicates table, and report counts per kind and the top pairs.",
    )
    add_config_args(p)
    p.add_argument("--top", type=_count, default=10,
                   help="pairs shown per kind in the report; 0: counts only (default: %(default)s)")
    p.add_argument("--json", action="store_true", help='print {"summary": ..., "pairs": [...]} as JSON')
    p.set_defaults(handler=_run_duplicates)


def _count(text: str) -> int:
    """An argparse type: an integer >= 0 (a negative --top used to drop pairs from the end)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _run_duplicates(args: argparse.Namespace) -> int:
    from soundalike.config import load_config
    from soundalike.duplicates import report
    from soundalike_pipelines.duplicates import read_duplicates, run_duplicates
    from soundalike_pipelines.lock import pipeline_lock
    from soundalike_pipelines.session import get_spark

    cfg = load_config(args.conf, args.overrides)
    # It writes the fingerprints table as the pipeline's index stage does: one run per work dir.
    with pipeline_lock(cfg):
        spark = get_spark(cfg)
        summary = run_duplicates(cfg, spark, progress=not args.json)
        pairs = read_duplicates(spark, cfg)
    if args.json:
        _print_json({"summary": summary.to_json(), "pairs": pairs})
    else:
        print(f"{summary.new_tracks} new tracks compared, {summary.removed_tracks} removed; "
              f"{summary.pairs_written} pairs written, {summary.pairs_deleted} deleted")
        print(report(pairs, top=args.top))
    return 0


def _run_stages(args: argparse.Namespace) -> int:
    from soundalike.config import load_config
    from soundalike_pipelines.runner import run_pipeline

    cfg = load_config(args.conf, args.overrides)
    stages = args.stages
    echo = None if args.json else (lambda line: print(line, flush=True))
    try:
        results = run_pipeline(cfg, stages, echo=echo)
    except SoundalikeError as exc:
        if args.json:
            # The stages before the failing one ran and wrote; their summaries are not lost. A
            # failure before the first stage (weights, a busy work dir) has stage null.
            _print_json({**(getattr(exc, "completed", None) or {}),
                         "error": {"stage": getattr(exc, "stage", None), "message": str(exc)}})
        raise
    if args.json:
        _print_json(results)
    return 0


# --------------------------------------------------------------------------- query


def _query_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="find the catalogue songs that sound like an audio file, or match a description",
        description="Embed FILE like the catalogue, fetch each clip's nearest catalogue clips, fuse per song. "
                    'With --text "calm solo piano" instead, the text tower of a CLAP embedder turns the '
                    "description into one query vector, fused per song by the same rule.",
    )
    p.add_argument("file", nargs="?", help="query audio file (or give --text)")
    p.add_argument("--text", default=None, metavar="TEXT",
                   help='describe the music instead of giving FILE, e.g. "calm solo piano" (embedder clap)')
    add_config_args(p)
    p.add_argument("--model", default=None, metavar="URI",
                   help="MLflow model URI (default: models:/<mlflow.model_name>@champion)")
    p.add_argument("--top", type=int, default=None, help="songs to return (default: query.max_results)")
    p.add_argument("--top-k-per-chunk", type=int, default=None,
                   help="catalogue clips per query clip (default: query.top_k_per_chunk)")
    p.add_argument("--vote-weight", type=float, default=None,
                   help="weight of votes vs similarity, 0..1 (default: query.vote_weight)")
    p.add_argument("--exclude-self", action="store_true", help="leave out the catalogue track with the same bytes")
    p.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')
    p.set_defaults(handler=_run_query)


def _run_query(args: argparse.Namespace) -> int:
    import base64
    import math

    import pandas as pd

    from soundalike.audio import describe_source
    from soundalike.config import load_config
    from soundalike.errors import AudioDecodeError, ParameterError
    from soundalike.search import check_query_length, query_track_id

    if (args.file is None) == (args.text is None):
        raise ParameterError("give exactly one of FILE (an audio file) or --text TEXT")
    if args.text is not None and not args.text.strip():
        raise ParameterError("--text must not be empty")
    if args.text is not None and args.exclude_self:
        raise ParameterError("--exclude-self needs a query FILE, not --text")
    cfg = load_config(args.conf, args.overrides)
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise AudioDecodeError(str(path), "file does not exist" if not path.exists() else "not a regular file")
        if path.stat().st_size > cfg.query.max_query_bytes:
            raise AudioDecodeError(str(path), f"larger than query.max_query_bytes={cfg.query.max_query_bytes}")
        try:  # from the header, before the model is loaded or anything decoded; names the file
            check_query_length(path, cfg.query.max_query_seconds)
        except ParameterError as exc:
            raise ParameterError(f"{path}: {exc}") from None
    model = _load_search_model(cfg, args.model)
    # The defaults are this command's query.* settings (--conf, --set), not the model's logged ones.
    q = cfg.query
    params = {
        "max_results": q.max_results if args.top is None else args.top,
        "top_k_per_chunk": q.top_k_per_chunk if args.top_k_per_chunk is None else args.top_k_per_chunk,
        "vote_weight": q.vote_weight if args.vote_weight is None else args.vote_weight,
    }
    if args.exclude_self:
        params["exclude_track_ids"] = [query_track_id(path)]
    if args.text is not None:
        frame = pd.DataFrame({"text": [args.text]})
        out = _predict(model, frame, params)[0]
    else:
        # This command's limit, within the model's own (a higher one the model would refuse).
        params["max_query_seconds"] = min(q.max_query_seconds, _param_default(model, "max_query_seconds", math.inf))
        data = path.read_bytes()
        frame = pd.DataFrame({"audio_b64": [base64.b64encode(data).decode()]})
        # The model knows the query as "row 0" of "<n bytes>"; the user knows it as their file.
        out = _predict(model, frame, params, name=(describe_source(data), str(path)))[0]
    if args.json:
        _print_json(out)
    else:
        if args.text is not None:
            print(f"text query: {out['query_text']!r}")
        _print_results(out)
    return 0


def _load_search_model(cfg, uri: str | None):
    import mlflow

    from soundalike.errors import ModelWeightsError
    from soundalike.mlflow_model import configure_mlflow

    configure_mlflow(cfg, read_only=True, model_uri=uri)
    uri = uri or f"models:/{cfg.mlflow.model_name}@champion"
    try:
        return mlflow.pyfunc.load_model(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise ModelWeightsError(
            f"cannot load model {uri}: {str(exc).splitlines()[0]} (run `soundalike pipeline` first)"
        ) from None


def _param_default(model, name: str, fallback):
    """The default of param ``name`` in the model's signature (its logged ``query.*``), else ``fallback``."""
    schema = model.metadata.get_params_schema() if model.metadata is not None else None
    for param in (schema.params if schema is not None else []):
        if param.name == name and param.default is not None:
            return param.default
    return fallback


def _predict(model, frame, params, *, name: tuple[str, str] | None = None):
    """``model.predict``; a refusal becomes a one-line error, with ``name = (model's, user's)`` name
    of the one query swapped in and the model's ``query row 0:`` dropped."""
    import mlflow

    from soundalike.errors import ParameterError

    try:
        return model.predict(frame, params=params)
    except mlflow.exceptions.MlflowException as exc:
        message = str(exc.message).splitlines()[0]
        if len(frame) == 1:
            message = message.removeprefix("query row 0: ")
        if name is not None:
            message = message.replace(name[0], name[1])
        raise ParameterError(message) from None


def _print_results(out: dict) -> None:
    results = out["results"]
    print(f"{out['query_clips']} query clips, {out['query_seconds']:.1f} s, embedder {out['embedder']}")
    if not results:
        print("no matches")
        return
    width = max(len(Path(r["path"] or r["track_id"]).name) for r in results)
    print(f"{'rank':>4}  {'file':<{width}}  {'combined':>8}  {'votes':>5}  {'total sim':>9}")
    for r in results:
        name = Path(r["path"] or r["track_id"]).name
        print(f"{r['rank']:>4}  {name:<{width}}  {r['combined_score']:>8.3f}  {r['votes']:>5}  {r['total_similarity']:>9.3f}")
        best: dict[float, dict] = {}
        for m in r["evidence"]:
            if m["query_start_s"] not in best or m["similarity"] > best[m["query_start_s"]]["similarity"]:
                best[m["query_start_s"]] = m
        shown = ", ".join(f"{q:g}s→{m['clip_start_s']:g}s (d={m['distance']:.3f})" for q, m in sorted(best.items()))
        print(f"{'':>6}clips: {shown}")
    found = out.get("identified")
    if found:
        name = next((Path(r["path"] or r["track_id"]).name for r in results if r["track_id"] == found["track_id"]),
                    found["track_id"])
        print(f"identified: {name}, the query starts at {found['offset_s']:.2f} s in it "
              f"({found['aligned_hits']} aligned landmarks, speed x{found['speed']:g})")


# --------------------------------------------------------------------------- web


def _web_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web",
        help="serve the search page and its JSON API",
        description="Serve the web app: upload a recording, see the songs that sound like it, listen to the "
                    "matched clips, compare two tracks. Queries go to the registered model loaded here "
                    "(web.backend=local) or to a model-serving endpoint (web.backend=remote; URL and token "
                    "from the environment variables web.endpoint_url_env / web.host_env and web.token_env).",
    )
    add_config_args(p)
    p.add_argument("--model", default=None, metavar="URI",
                   help="local backend: MLflow model URI (default: web.model_uri, else "
                        "models:/<mlflow.model_name>@champion)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.set_defaults(handler=_run_web)


def _run_web(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from soundalike.config import load_config
    from soundalike.web.app import create_app
    from soundalike.web.backends import LocalBackend, RemoteBackend

    cfg = load_config(args.conf, args.overrides)
    if cfg.web.backend == "remote":
        backend = RemoteBackend.from_env(cfg, os.environ)
    else:
        uri = args.model or cfg.web.model_uri or f"models:/{cfg.mlflow.model_name}@champion"
        backend = LocalBackend(_load_search_model(cfg, uri), uri)
    app = create_app(cfg, backend)
    print(f"soundalike web: {backend.info.kind} backend {backend.info.model}; http://{args.host}:{args.port}/",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


# --------------------------------------------------------------------------- main

def _train_parser(sub: argparse._SubParsersAction) -> None:
    from soundalike.train_cli import add_train_parser

    add_train_parser(sub)


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the registered query model locally (mlflow models serve on <model_name>@champion)",
        description="Run MLflow's scoring server on the champion soundalike_search model: POST "
        "dataframe_records with audio_b64 or text to /invocations, as on Databricks Model Serving.",
    )
    add_config_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default: %(default)s)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import subprocess

    from soundalike.config import load_config
    from soundalike.mlflow_model import configure_mlflow
    from soundalike.serving import check_model_uri, serve_command, serve_env

    cfg = load_config(args.conf, args.overrides)
    configure_mlflow(cfg, read_only=True)
    check_model_uri(f"models:/{cfg.mlflow.model_name}@champion")  # one line and exit 2, not the server's traceback
    return subprocess.call(serve_command(cfg, host=args.host, port=args.port, workers=args.workers), env=serve_env())


_PARSERS = (_compare_parser, _sample_parser, _pipeline_parsers, _query_parser, _train_parser, _web_parser,
            _serve_parser)


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
