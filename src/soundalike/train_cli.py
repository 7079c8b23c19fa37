"""The ``soundalike train`` subcommand: learn the ``siamese`` embedder from the catalogue's tags.

``add_train_parser(sub)`` adds it to the ``soundalike`` command's subparsers; the handler loads
the config (``--conf``, ``--set``; the flags below are ``training.*`` overrides applied at the
same edge), trains and evaluates (:func:`soundalike.training.train.train_similarity`), then
logs and registers the run (:func:`soundalike.training.tracking.log_training_run`).

Examples
--------
::

    soundalike train --conf conf/local.yaml --loss triplet --epochs 20 --json
    soundalike train --set training.branch=head --no-mlflow
"""

from __future__ import annotations

import argparse
import json
import sys

from soundalike.cli import add_config_args  # cli imports this module lazily, so no cycle


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Define ``soundalike train`` on ``sub`` (the subparsers of the ``soundalike`` parser)."""
    p = sub.add_parser(
        "train",
        help="train the siamese embedder on the catalogue's tags and evaluate it on held-out tracks",
        description="Train a Siamese network on pairs drawn from the catalogue's metadata similarity "
                    "(5 positives, 5 negatives per track), save one branch as the `siamese` embedder, "
                    "compare it with its base embedder on held-out tracks, and log/register it in MLflow.",
    )
    add_config_args(p)
    p.add_argument("--loss", choices=("contrastive", "triplet"), default=None,
                   help="training.loss (default: from the config)")
    p.add_argument("--branch", choices=("cnn", "head"), default=None,
                   help="training.branch: CNN over log-mel, or a head over the frozen base embedder")
    p.add_argument("--epochs", type=int, default=None, help="training.epochs")
    p.add_argument("--seed", type=int, default=None, help="training.seed (split, pairs, initial weights)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="training.output_dir: where the embedder's files go (default: <workdir>/models/siamese)")
    p.add_argument("--no-mlflow", action="store_true", help="train, save and evaluate, but log nothing to MLflow")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run_train)
    return p


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``soundalike train``; returns the exit status."""
    from soundalike.config import load_config
    from soundalike.training.train import train_similarity

    flags = {"loss": args.loss, "branch": args.branch, "epochs": args.epochs, "seed": args.seed,
             "output_dir": args.output_dir}
    overrides = list(args.overrides) + [f"training.{k}={v}" for k, v in flags.items() if v is not None]
    cfg = load_config(args.conf, overrides)
    echo = None if args.json else (lambda line: print(line, flush=True))
    result = train_similarity(cfg, echo=echo)
    run = None
    if not args.no_mlflow:
        from soundalike.training.tracking import log_training_run

        run = log_training_run(cfg, result)
    if args.json:
        payload = {**result.to_json(), "mlflow": run}
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if run is not None:
            registered = f", registered {run['model_name']} v{run['model_version']}" if run["model_version"] else ""
            print(f"MLflow run {run['run_id']}{registered}")
        print(f"use it: --set embedder.name=siamese --set embedder.weights_path={result.model_dir}")
    return 0
