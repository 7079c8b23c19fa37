from pathlib import Path

import pytest

from soundalike.config import Config, config_to_dict, load_config
from soundalike.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("profile", ["local.yaml", "databricks.yaml", "base.yaml"])
def test_shipped_profiles_load(profile):
    cfg = load_config(CONF / profile)
    assert isinstance(cfg, Config)
    assert cfg.clips.clip_s == 10.0 and cfg.embedder.name == "mel"
    assert cfg.tables.name("tracks").count(".") == 2


def test_profiles_override_their_base():
    local, dbx = load_config(CONF / "local.yaml"), load_config(CONF / "databricks.yaml")
    assert local.tables.name("clips") == "spark_catalog.soundalike.clips"
    assert dbx.tables.name("clips") == "main.soundalike.clips"
    assert local.spark.conf["spark.sql.shuffle.partitions"] == "4"
    assert dbx.spark.with_delta_pip is False and local.spark.with_delta_pip is True


def test_set_overrides_are_typed():
    cfg = load_config(CONF / "local.yaml", ["clips.hop_s=5", "embedder.name=clap", "catalogue.extensions=[wav]", "embedder.weights_path=null"])
    assert cfg.clips.hop_s == 5.0 and isinstance(cfg.clips.hop_s, float)
    assert cfg.embedder.name == "clap" and cfg.catalogue.extensions == ("wav",)
    assert cfg.embedder.weights_path is None
    assert config_to_dict(cfg)["clips"]["hop_s"] == 5.0


def test_set_reaches_spark_settings_and_embedder_options_by_their_dotted_names():
    cfg = load_config(CONF / "local.yaml", [
        "spark.conf.spark.sql.shuffle.partitions=8",
        "spark.conf.spark.driver.extraJavaOptions=-Xss4m -XX:TieredStopAtLevel=1",
        "embedder.options.amodel=HTSAT-tiny",
    ])
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == 8
    assert cfg.spark.conf["spark.driver.extraJavaOptions"] == "-Xss4m -XX:TieredStopAtLevel=1"
    assert "spark" not in cfg.spark.conf  # not a nested {"spark": {"sql": ...}} that Spark never sees
    assert cfg.spark.conf["spark.default.parallelism"] == "4"  # the profile's other settings stay
    assert cfg.embedder.options == {"amodel": "HTSAT-tiny"}


@pytest.mark.parametrize(
    "override,message",
    [
        ("clips.hop=5", "unknown config key.*clips.hop"),
        ("clips.hop_s=fast", "clips.hop_s must be float"),
        ("nonsense", "section.key=value"),
        ("clips=3", "clips must be a mapping"),
        ("spark.conf={spark: {sql: 1}}", "spark.conf.spark must be a single value"),
        ("spark.conf.spark.ui.enabled=null", "spark.conf.spark.ui.enabled must be a single value"),
    ],
)
def test_bad_overrides_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONF / "local.yaml", [override])


def test_missing_bad_and_cyclic_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("clips: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_config_is_frozen():
    cfg = load_config(None)
    with pytest.raises(Exception):
        cfg.clips.clip_s = 3.0  # type: ignore[misc]
