"""The register stage points the Model Serving endpoint at the champion version (Databricks SDK).

The workspace is an in-memory stand-in for ``WorkspaceClient().serving_endpoints`` that keeps the
endpoint's config as the SDK's own dataclasses, so the requests built here are the real ones."""

from __future__ import annotations

import pytest

pytest.importorskip("databricks.sdk")

from databricks.sdk.errors import NotFound  # noqa: E402
from databricks.sdk.service.serving import (  # noqa: E402
    EndpointCoreConfigOutput, ServedEntityOutput, ServingEndpointDetailed,
)

from soundalike.config import load_config  # noqa: E402
from soundalike_pipelines.endpoint import point_endpoint_at  # noqa: E402

MODEL = "main.soundalike.soundalike_search"


class FakeEndpoints:
    def __init__(self, endpoints: dict):
        self.endpoints = endpoints
        self.updates = []

    def get(self, name):
        if name not in self.endpoints:
            raise NotFound(f"endpoint {name} not found")
        return self.endpoints[name]

    def update_config(self, *, name, served_entities, traffic_config):
        self.updates.append((name, served_entities, traffic_config))
        self.endpoints[name] = ServingEndpointDetailed(name=name, config=EndpointCoreConfigOutput(served_entities=[
            ServedEntityOutput(name=e.name, entity_name=e.entity_name, entity_version=e.entity_version,
                               workload_size=e.workload_size, scale_to_zero_enabled=e.scale_to_zero_enabled)
            for e in served_entities]))


class FakeWorkspace:
    def __init__(self, endpoints):
        self.serving_endpoints = FakeEndpoints(endpoints)


def cfg_with(endpoint):
    return load_config("conf/databricks.yaml", [f"mlflow.serving_endpoint={'null' if endpoint is None else endpoint}"])


def deployed(version="1", size="Medium"):
    return {"soundalike-search": ServingEndpointDetailed(name="soundalike-search", config=EndpointCoreConfigOutput(
        served_entities=[ServedEntityOutput(name="champion", entity_name=MODEL, entity_version=version,
                                            workload_size=size, scale_to_zero_enabled=False)]))}


def test_a_new_champion_is_served_keeping_the_endpoint_settings():
    ws = FakeWorkspace(deployed("1"))
    said = point_endpoint_at(cfg_with("soundalike-search"), MODEL, "3", workspace=ws)
    assert said == f"endpoint soundalike-search now serves {MODEL} v3 (was v1)"
    (name, entities, traffic), = ws.serving_endpoints.updates
    assert name == "soundalike-search"
    assert [(e.name, e.entity_name, e.entity_version, e.workload_size, e.scale_to_zero_enabled) for e in entities] == [
        ("champion", MODEL, "3", "Medium", False)]
    assert [(r.served_model_name, r.traffic_percentage) for r in traffic.routes] == [("champion", 100)]
    # Running register again changes nothing.
    assert "already serves" in point_endpoint_at(cfg_with("soundalike-search"), MODEL, "3", workspace=ws)
    assert len(ws.serving_endpoints.updates) == 1


def test_no_endpoint_configured_or_not_deployed_is_reported_not_an_error():
    ws = FakeWorkspace({})
    assert "no serving endpoint configured" in point_endpoint_at(cfg_with(None), MODEL, "2", workspace=ws)
    assert "does not exist yet" in point_endpoint_at(cfg_with("soundalike-search"), MODEL, "2", workspace=ws)
    assert ws.serving_endpoints.updates == []
