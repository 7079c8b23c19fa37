"""The champion gate: a new index becomes champion only if its evaluation is not worse."""

import mlflow
import pytest
from mlflow import MlflowClient

from soundalike_pipelines.index_build import CATALOGUE_TAG, CHAMPION, INDEX_RUN_TAG, catalogue_digest, champion_gate


@pytest.fixture
def client(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("gate", artifact_location=(tmp_path / "art").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    yield MlflowClient()
    mlflow.set_tracking_uri("")


def index_run(metrics, tracks=None):
    with mlflow.start_run() as run:
        if metrics:
            mlflow.log_metrics(metrics)
        if tracks is not None:
            mlflow.set_tag(CATALOGUE_TAG, catalogue_digest(tracks))
            mlflow.log_param("tracks", len(set(tracks)))
    return mlflow.get_run(run.info.run_id)


def make_champion(client, run):
    client.create_registered_model("m") if not client.search_registered_models("name = 'm'") else None
    version = client.create_model_version("m", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_model_version_tag("m", version.version, INDEX_RUN_TAG, run.info.run_id)
    client.set_registered_model_alias("m", CHAMPION, version.version)


def test_first_index_is_promoted(client):
    client.create_registered_model("m")
    ok, why = champion_gate(client, "m", index_run({"eval_top1": 0.5}))
    assert ok and "no champion" in why


def test_equal_or_better_is_promoted_and_worse_is_kept(client):
    make_champion(client, index_run({"eval_top1": 0.90, "eval_mrr": 0.93, "eval_tag_precision_at_5": 0.8}))
    ok, why = champion_gate(client, "m", index_run({"eval_top1": 0.90, "eval_mrr": 0.95, "eval_tag_precision_at_5": 0.8}))
    assert ok and "promoted over v1" in why
    ok, why = champion_gate(client, "m", index_run({"eval_top1": 0.91, "eval_mrr": 0.92, "eval_tag_precision_at_5": 0.9}))
    assert not ok and "eval_mrr 0.9200 < 0.9300" in why
    ok, why = champion_gate(client, "m", index_run({}))
    assert not ok and "no evaluation metrics" in why


def test_an_index_of_other_tracks_is_promoted_whatever_its_metrics(client):
    """Files added or removed: evaluations of two catalogues are not comparable, and a removed
    track must leave the served model."""
    make_champion(client, index_run({"eval_top1": 0.90, "eval_mrr": 0.93}, tracks=["a", "b", "c"]))
    ok, why = champion_gate(client, "m", index_run({"eval_top1": 0.50, "eval_mrr": 0.60}, tracks=["a", "b"]))
    assert ok and "catalogue changed (2 tracks, was 3)" in why
    ok, why = champion_gate(client, "m", index_run({}, tracks=["a", "b", "c", "d"]))
    assert ok and "catalogue changed" in why
    # The same tracks (in any order): the metrics decide, as before.
    ok, why = champion_gate(client, "m", index_run({"eval_top1": 0.50, "eval_mrr": 0.60}, tracks=["c", "a", "b", "a"]))
    assert not ok and "eval_top1 0.5000 < 0.9000" in why
