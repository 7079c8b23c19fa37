"""Run stages in order: the local equivalent of the scheduled Databricks job."""

from __future__ import annotations

from typing import Callable, Sequence

from pyspark.sql import SparkSession

from soundalike.config import Config
from soundalike.errors import ConfigError
from soundalike_pipelines.duplicates import run_duplicates
from soundalike_pipelines.embed import run_embed
from soundalike_pipelines.evaluate import run_evaluate
from soundalike_pipelines.index_build import run_index, run_register
from soundalike_pipelines.ingest import run_ingest
from soundalike_pipelines.session import get_spark

#: The stages of a catalogue refresh, in order. The bundle's job uses the same order.
STAGES: dict[str, Callable[[Config, SparkSession], object]] = {
    "ingest": run_ingest,
    "embed": run_embed,
    "index": run_index,
    "evaluate": run_evaluate,
    "register": run_register,
    "duplicates": run_duplicates,
}


def run_pipeline(cfg: Config, stages: Sequence[str] | None = None, *, echo: Callable[[str], None] | None = None) -> dict:
    """Run ``stages`` (default: all, in order) and return ``{stage: summary dict}``."""
    names = list(STAGES) if not stages else list(stages)
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    spark = get_spark(cfg)
    results = {}
    for name in STAGES:  # always in pipeline order, whatever order they were named in
        if name not in names:
            continue
        if echo:
            echo(f"[{name}] running")
        summary = STAGES[name](cfg, spark)
        results[name] = summary.to_json()
        if echo:
            echo(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in results[name].items()))
    return results
