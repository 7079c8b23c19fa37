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


@pytest.mark.parametrize(
    "override,message",
    [
        # each of these used to pass load_config and fail late (a traceback) or silently
        ("clips.hop_s=20", r"clips.hop_s \(20.0\) must not exceed clips.clip_s"),
        ("clips.min_tail_s=0", "clips.min_tail_s must be"),
        ("clips.min_tail_s=11", "clips.min_tail_s .* must not exceed clips.clip_s"),
        ("clips.clip_s=-1", "clips.clip_s must be"),
        ("clips.noise_flatness=2", "clips.noise_flatness must be in"),
        ("catalogue.decode_timeout_s=.nan", "catalogue.decode_timeout_s must be a finite number"),
        ("catalogue.decode_timeout_s=.inf", "catalogue.decode_timeout_s must be a finite number"),
        ("catalogue.extensions=[]", "catalogue.extensions must be a non-empty list"),
        ("embedder.batch_size=0", "embedder.batch_size must be >= 1"),
        ("embedder.decode_workers=-1", "embedder.decode_workers must be >= 0"),
        ("index.factory=garbage", "index.factory 'garbage' is not auto or a faiss index_factory string"),
        ("index.factory=IVF,Flat", "index.factory 'IVF,Flat' is not auto or a faiss"),
        ("index.nprobe=0", "index.nprobe must be >= 1"),
        ("evaluation.n_excerpts=0", "evaluation.n_excerpts must be >= 1"),
        ("evaluation.n_excerpts=-3", "evaluation.n_excerpts must be >= 1"),
        ("evaluation.seed=-1", "evaluation.seed must be >= 0"),
        ("duplicates.version_tempo_steps=0", "duplicates.version_tempo_steps must be >= 1"),
        ("duplicates.min_coverage=1.5", "duplicates.min_coverage must be in"),
        ("duplicates.version_tempo_range=[1.4, 0.7]", "duplicates.version_tempo_range must be"),
        ("duplicates.version_min_melody_share=1.2", "duplicates.version_min_melody_share must be in"),
        ("duplicates.version_min_aligned_similarity=0.9", "duplicates.version_min_aligned_similarity .* must not exceed"),
        ("query.max_results=0", "query.max_results must be >= 1"),
        ("query.vote_weight=1.5", "query.vote_weight must be in"),
        ("query.allowed_path_root=", "query.allowed_path_root is empty"),
        ("fingerprint.floor_db=0", "fingerprint.floor_db must be"),
        ("training.seed=-2", "training.seed must be >= 0"),
        ("tables.schema=", "tables.schema is empty"),
        ("workdir=", "workdir is empty"),
        ("workdir=' '", "workdir is empty"),
    ],
)
def test_out_of_range_settings_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONF / "local.yaml", [override])


@pytest.mark.parametrize("override", ["clips.hop_s=10", "clips.hop_s=2.5", "clips.min_tail_s=10",
                                      "index.factory=IVF1024,PQ25x8,RFlat", "index.factory=HNSW32,Flat",
                                      "evaluation.n_excerpts=1", "duplicates.version_tempo_steps=1"])
def test_edge_values_that_make_sense_still_load(override):
    load_config(CONF / "local.yaml", [override])


def test_factory_that_parses_but_does_not_fit_the_dimension_fails_at_index_time_naming_both():
    # PQ32 needs dim % 32 == 0: whether it fits is known only once the embedder's dim is.
    cfg = load_config(CONF / "local.yaml", ["index.factory=IVF4096,PQ32x8,RFlat"])
    from soundalike.index import choose_factory

    with pytest.raises(ConfigError, match=r"index.factory 'IVF4096,PQ32x8,RFlat' for the embedder's 225-dim"):
        choose_factory(100, 225, cfg.index)
    assert choose_factory(100, 256, cfg.index) == "IVF4096,PQ32x8,RFlat"
