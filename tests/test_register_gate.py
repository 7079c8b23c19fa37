"""The champion gate: a new index becomes champion only if its evaluation is not worse."""

import mlflow
import pytest
from mlflow import MlflowClient

from soundalike_pipelines.index_build import CHAMPION, INDEX_RUN_TAG, champion_gate


@pytest.fixture
def client(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("gate", artifact_location=(tmp_path / "art").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    yield MlflowClient()
    mlflow.set_tracking_uri("")


def index_run(metrics):
    with mlflow.start_run() as run:
        if metrics:
            mlflow.log_metrics(metrics)
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
