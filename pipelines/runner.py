"""Run stages in order: the local equivalent of the scheduled Databricks job."""

from __future__ import annotations

from typing import Callable, Sequence

from pyspark.sql import SparkSession

from soundalike.config import Config
from soundalike.embedders import create_embedder
from soundalike.errors import ConfigError
from soundalike_pipelines.duplicates import run_duplicates
from soundalike_pipelines.embed import run_embed
from soundalike_pipelines.evaluate import run_evaluate
from soundalike_pipelines.index_build import run_index, run_register
from soundalike_pipelines.ingest import run_ingest
from soundalike_pipelines.lock import pipeline_lock
from soundalike_pipelines.session import get_spark
from soundalike_pipelines.writes import unreadable_paths

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
    """Run ``stages`` (``None``: all, in order) and return ``{stage: summary dict}``.

    An empty ``stages`` is a :class:`~soundalike.errors.ConfigError`, not "all".

    Holds the work dir's pipeline lock (:mod:`soundalike_pipelines.lock`) throughout: a second
    run on the same work dir fails at once with :class:`~soundalike_pipelines.lock.PipelineBusyError`.
    When ``ingest`` or ``embed`` ran, ``"catalogue"`` reports good / quarantined / skipped files.
    When a stage fails, its exception carries ``stage`` (its name) and ``completed`` (the summaries
    of the stages before it).
    """
    names = list(STAGES) if stages is None else list(stages)
    if not names:  # e.g. --stages "": running everything (register included) is never what was meant
        raise ConfigError(f"no stages given; name one or more of {', '.join(STAGES)}, or leave out --stages for all")
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    with pipeline_lock(cfg):
        return _run(cfg, names, echo)


#: Stages that build the configured embedder (and so need its weights).
_EMBEDDER_STAGES = ("embed", "index", "evaluate", "register")


def _run(cfg: Config, names: list[str], echo) -> dict:
    if set(_EMBEDDER_STAGES) & set(names):
        # Missing or broken weights fail here, before a Spark session starts and before an
        # earlier stage (ingest) writes anything; the model is loaded once more by its stage.
        create_embedder(cfg.embedder, clip_s=cfg.clips.clip_s)
    spark = get_spark(cfg)
    results = {}
    for name in STAGES:  # always in pipeline order, whatever order they were named in
        if name not in names:
            continue
        if echo:
            echo(f"[{name}] running")
        try:
            summary = STAGES[name](cfg, spark)
        except Exception as exc:
            # What the earlier stages did is still true (and written): the CLI's --json prints it.
            exc.stage, exc.completed = name, results
            raise
        results[name] = summary.to_json()
        if echo:
            echo(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in results[name].items()))
    if {"ingest", "embed"} & set(names):
        results["catalogue"] = catalogue_status(cfg, spark)
        if echo:
            status = results["catalogue"]
            echo(f"[catalogue] good={status['good']}, quarantined={status['quarantined']}, "
                 f"skipped={status['skipped']}")
            for row in status["problems"]:
                echo(f"  {row['kind']}: {row['path']} ({row['stage']}: {row['message']})")
    return results


#: Error classes that mean "nothing to embed" rather than "something is wrong with the file".
SKIPPED_CLASSES = ("TooShort",)


def catalogue_status(cfg: Config, spark: SparkSession, *, show: int = 50) -> dict:
    """Where every catalogue file stands: ``good`` (has clips under the current clip policy),
    ``quarantined`` (in ``ingest_errors``: undecodable, too large, timed out, ...), ``skipped``
    (decodable but too short for one clip); and the first ``show`` problem files with reasons."""
    from pyspark.sql import functions as F

    from soundalike.extract import clip_policy

    tracks = spark.table(cfg.tables.name("tracks")).select("path", "track_id")
    clips = spark.table(cfg.tables.name("clips")).where(F.col("clip_policy") == clip_policy(cfg.clips))
    errors = (spark.table(cfg.tables.name("ingest_errors"))
              .select("path", "stage", "error_class", "message").orderBy("path", "stage").collect())
    # A file that became unreadable keeps its stored clips, but it is quarantined, not good.
    unreadable = unreadable_paths(spark, cfg)
    good = (tracks.join(clips.select("track_id").distinct(), "track_id").select("path").distinct()
            .join(unreadable, "path", "left_anti").count())
    kinds = {}
    for row in errors:
        kind = "skipped" if row["error_class"] in SKIPPED_CLASSES else "quarantined"
        if kinds.get(row["path"]) != "quarantined":  # a path quarantined at any stage stays so
            kinds[row["path"]] = kind
    problems = [
        {"kind": kinds[row["path"]], "path": row["path"], "stage": row["stage"],
         "error_class": row["error_class"], "message": (row["message"] or "")[:300]}
        for row in errors[:show]
    ]
    return {
        "good": good,
        "quarantined": sum(1 for k in kinds.values() if k == "quarantined"),
        "skipped": sum(1 for k in kinds.values() if k == "skipped"),
        "problems": problems,
    }
