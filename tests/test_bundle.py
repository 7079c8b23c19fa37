"""The Databricks bundle, validated offline (the Databricks CLI cannot be installed here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from soundalike.cli import build_parser
from soundalike.config import load_config

ROOT = Path(__file__).resolve().parents[1]
VAR = re.compile(r"\$\{var\.([A-Za-z0-9_]+)\}")


def load_bundle() -> dict:
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    resources: dict = {}
    for pattern in bundle["include"]:
        for path in sorted(ROOT.glob(pattern)):
            for kind, items in yaml.safe_load(path.read_text())["resources"].items():
                for key, value in items.items():
                    assert key not in resources.setdefault(kind, {}), f"{kind}.{key} defined twice"
                    resources[kind][key] = {**value, "_file": path}
    return {**bundle, "resources": resources}


RESOURCE = re.compile(r"\$\{resources\.([a-z_]+)\.([A-Za-z0-9_]+)\.name\}")


def substitute(text: str, bundle: dict, *, dev_user: str | None = None) -> str:
    """``text`` with the bundle's variables (defaults) and resource names filled in. With
    ``dev_user``, as development mode deploys it: the CLI's presets prefix schema and endpoint
    names with ``dev_<user>_`` (databricks/cli, bundle/config/mutator/apply_presets.go), volumes
    keep theirs."""
    def resource_name(m):
        kind, key = m.group(1), m.group(2)
        name = substitute(bundle["resources"][kind][key]["name"], bundle)
        prefixed = dev_user and kind in ("schemas", "model_serving_endpoints", "registered_models")
        return f"dev_{dev_user}_{name}" if prefixed else name

    def variable(m):
        value = bundle["targets"]["dev"].get("variables", {}).get(m.group(1)) if dev_user else None
        if value is not None:
            return str(value).replace("${workspace.current_user.short_name}", dev_user)
        return str(bundle["variables"][m.group(1)]["default"]) or "x"

    text = RESOURCE.sub(resource_name, text)
    text = VAR.sub(variable, text)
    return text.replace("${workspace.file_path}", str(ROOT)).replace("${bundle.name}", bundle["bundle"]["name"])


def all_strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from all_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from all_strings(v)
    elif isinstance(node, str):
        yield node


def test_every_variable_used_is_defined_and_every_defined_one_is_used():
    bundle = load_bundle()
    used = {m for s in all_strings(bundle) for m in VAR.findall(s)}
    defined = set(bundle["variables"])
    assert used <= defined, used - defined
    assert defined - used == set(), f"unused variables: {defined - used}"
    for name, spec in bundle["variables"].items():
        assert spec.get("description"), f"variable {name} needs a description"


def test_targets_dev_is_development_and_prod_is_pinned():
    bundle = load_bundle()
    assert bundle["targets"]["dev"]["mode"] == "development" and bundle["targets"]["dev"]["default"] is True
    prod = bundle["targets"]["prod"]
    assert prod["mode"] == "production"
    assert prod["workspace"]["root_path"].startswith("/Workspace/")
    assert "service_principal_name" in prod["run_as"]


def refresh_tasks(bundle):
    return bundle["resources"]["jobs"]["catalogue_refresh"]["tasks"]


def all_tasks(bundle):
    return [t for job in bundle["resources"]["jobs"].values() for t in job["tasks"]]


def test_every_task_entry_point_exists_and_accepts_its_parameters(tmp_path):
    bundle = load_bundle()
    parser = build_parser()
    assert {t["task_key"] for t in all_tasks(bundle)} >= {"ingest", "embed", "index", "evaluate", "register", "train"}
    for task in all_tasks(bundle):
        spec = task["spark_python_task"]
        job_file = (ROOT / "resources" / spec["python_file"]).resolve()
        assert job_file.is_file(), job_file
        stage = re.search(r'main\(\["([a-z_]+)"', job_file.read_text()).group(1)
        assert stage in parser._subparsers._group_actions[0].choices, stage
        params = [substitute(p, bundle) for p in spec["parameters"]]
        args = parser.parse_args([stage, *params])
        cfg = load_config(args.conf, args.overrides)  # the overrides name real config keys
        assert cfg.tables.catalog == bundle["variables"]["catalog"]["default"]
        assert cfg.mlflow.model_name == "main.soundalike.soundalike_search"
        assert cfg.catalogue.path == "/Volumes/main/soundalike/audio"
        assert task["libraries"] == [{"whl": "../dist/*.whl"}]


def test_a_dev_deployment_reads_and_writes_only_its_own_schema():
    """Development mode renames the schema (not the variable): every table, volume path and model
    name must follow the schema resource, or a dev job MERGEs into the prod tables and moves the
    prod model's champion alias."""
    bundle = load_bundle()
    parser = build_parser()
    for task in all_tasks(bundle):
        spec = task["spark_python_task"]
        stage = re.search(r'main\(\["([a-z_]+)"', (ROOT / "resources" / spec["python_file"]).resolve().read_text()).group(1)
        args = parser.parse_args([stage, *[substitute(p, bundle, dev_user="ana") for p in spec["parameters"]]])
        cfg = load_config(args.conf, args.overrides)
        assert cfg.tables.schema == "dev_ana_soundalike"
        assert cfg.catalogue.path == "/Volumes/main/dev_ana_soundalike/audio"
        assert cfg.workdir == "/Volumes/main/dev_ana_soundalike/work"
        assert cfg.mlflow.model_name == "main.dev_ana_soundalike.soundalike_search"
        assert cfg.mlflow.experiment == "/Shared/soundalike_dev_ana"  # not the prod runs' experiment
        if stage == "train":
            assert cfg.training.model_name == "main.dev_ana_soundalike.soundalike_siamese"
            assert cfg.training.output_dir == "/Volumes/main/dev_ana_soundalike/weights/siamese"
        else:
            assert cfg.mlflow.serving_endpoint == "dev_ana_soundalike-search"
    entity = bundle["resources"]["model_serving_endpoints"]["soundalike_search"]["config"]["served_entities"][0]
    assert substitute(entity["entity_name"], bundle, dev_user="ana") == "main.dev_ana_soundalike.soundalike_search"
    schema_var = [s for path in (ROOT / "resources").glob("*.yml") if path.name != "soundalike.schema.yml"
                  for s in [path.read_text()] if "${var.schema}" in s]
    assert not schema_var, "name the schema through ${resources.schemas.soundalike.name}"


def test_task_graph_matches_the_local_runner_order():
    from soundalike_pipelines.runner import STAGES

    tasks = {t["task_key"]: t for t in refresh_tasks(load_bundle())}
    order, done = [], set()
    while len(order) < len(tasks):
        ready = sorted(k for k, t in tasks.items() if k not in done
                       and all(d["task_key"] in done for d in t.get("depends_on", [])))
        assert len(ready) == 1, f"the refresh job must be a chain, got {ready}"
        order.append(ready[0])
        done.add(ready[0])
    assert order == list(STAGES)


def test_embed_runs_on_the_gpu_cluster_and_the_rest_on_cpu():
    bundle = load_bundle()
    job = bundle["resources"]["jobs"]["catalogue_refresh"]
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    for task in job["tasks"]:
        expected = "gpu" if task["task_key"] == "embed" else "cpu"
        assert task["job_cluster_key"] == expected
        assert task.get("max_retries", 0) >= 1
    assert "gpu-ml" in clusters["gpu"]["spark_version"] and clusters["gpu"]["node_type_id"] == "${var.gpu_node_type}"
    assert job["schedule"]["quartz_cron_expression"] == "${var.schedule}"
    assert job["max_concurrent_runs"] == 1


def test_serving_endpoint_serves_the_uc_model_with_scale_to_zero():
    bundle = load_bundle()
    endpoint = bundle["resources"]["model_serving_endpoints"]["soundalike_search"]["config"]
    entity = endpoint["served_entities"][0]
    assert substitute(entity["entity_name"], bundle) == "main.soundalike.soundalike_search"
    assert entity["scale_to_zero_enabled"] is True and entity["workload_size"] in {"Small", "Medium", "Large"}
    volumes = bundle["resources"]["volumes"]
    assert {v["name"] for v in volumes.values()} >= {"${var.audio_volume}", "${var.weights_volume}"}


@pytest.mark.parametrize("artifact", ["soundalike_wheel"])
def test_wheel_artifact_builds_from_pyproject(artifact):
    spec = load_bundle()["artifacts"][artifact]
    assert spec["type"] == "whl" and (ROOT / spec["path"] / "pyproject.toml").is_file()
