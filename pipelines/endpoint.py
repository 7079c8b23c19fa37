"""Point the Model Serving endpoint at the champion version.

Model Serving serves a registered model *version*, not an alias. After the register stage moves
the ``champion`` alias, :func:`point_endpoint_at` updates the endpoint named in
``mlflow.serving_endpoint`` (the bundle passes its resource's name) to serve that version, keeping
the endpoint's workload size, scale-to-zero and environment. Nothing happens when no endpoint is
configured (local runs) or when it already serves that version; an endpoint not deployed yet is
reported, not an error. Uses the Databricks SDK (in every Databricks runtime; ``databricks-sdk``
is pinned in requirements.lock), authenticated from the job's environment.
"""

from __future__ import annotations

from soundalike.config import Config

SERVED_NAME = "champion"


def point_endpoint_at(cfg: Config, model_name: str, version: str, *, workspace=None) -> str:
    """Make ``mlflow.serving_endpoint`` serve ``model_name`` version ``version``; what was done, as text."""
    endpoint = cfg.mlflow.serving_endpoint
    if not endpoint:
        return "no serving endpoint configured (mlflow.serving_endpoint)"
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.serving import Route, ServedEntityInput, TrafficConfig

    if workspace is None:
        from databricks.sdk import WorkspaceClient

        workspace = WorkspaceClient()
    try:
        current = workspace.serving_endpoints.get(endpoint)
    except NotFound:
        return f"endpoint {endpoint} does not exist yet (`databricks bundle deploy` creates it)"
    served = list((current.config.served_entities if current.config else None) or [])
    if any(e.entity_name == model_name and str(e.entity_version) == str(version) for e in served):
        return f"endpoint {endpoint} already serves {model_name} v{version}"
    template = served[0] if served else None
    entity = ServedEntityInput(
        name=SERVED_NAME,
        entity_name=model_name,
        entity_version=str(version),
        workload_size=(template.workload_size if template and template.workload_size else "Small"),
        scale_to_zero_enabled=(template.scale_to_zero_enabled if template and template.scale_to_zero_enabled
                               is not None else True),
        environment_vars=template.environment_vars if template else None,
    )
    workspace.serving_endpoints.update_config(
        name=endpoint, served_entities=[entity],
        traffic_config=TrafficConfig(routes=[Route(served_model_name=SERVED_NAME, traffic_percentage=100)]),
    )
    before = f"v{template.entity_version}" if template else "nothing"
    return f"endpoint {endpoint} now serves {model_name} v{version} (was {before})"
