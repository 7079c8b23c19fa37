import numpy as np
import pytest

from soundalike.config import IndexConfig
from soundalike.errors import ConfigError, ModelWeightsError, ParameterError
from soundalike.index import INDEX_FILE, ClipIndex, build_index, choose_factory, recall_at_k


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids(n):
    return np.array([f"t{i // 4}" for i in range(n)], dtype=object), np.arange(n) % 4, (np.arange(n) % 4) * 10.0


def test_flat_index_finds_each_vector_itself_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    vectors = unit(rng, 400, 32)
    index = build_index(vectors, *ids(400), embedder="mel@test", factory="Flat")
    sims, rows = index.search(vectors[:10], k=3)
    assert rows[:, 0].tolist() == list(range(10))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    index.save(tmp_path / "idx")
    loaded = ClipIndex.load(tmp_path / "idx")
    assert (loaded.embedder, loaded.dim, len(loaded), loaded.factory) == ("mel@test", 32, 400, "Flat")
    sims2, rows2 = loaded.search(vectors[:10], k=3)
    np.testing.assert_array_equal(rows, rows2)
    tids, clip_idx, start_s = loaded.lookup(rows2)
    assert tids[0, 0] == "t0" and clip_idx[0, 0] == 0 and start_s[1, 0] == 10.0


def test_tampered_index_file_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    index = build_index(unit(rng, 50, 8), *ids(50), embedder="e@1", factory="Flat")
    index.save(tmp_path / "idx")
    path = tmp_path / "idx" / INDEX_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelWeightsError, match="checksum"):
        ClipIndex.load(tmp_path / "idx")
    with pytest.raises(ModelWeightsError, match="manifest.json is missing"):
        ClipIndex.load(tmp_path / "nothing-here")


@pytest.mark.parametrize("factory", ["HNSW32,Flat", "IVF64,PQ8x8,RFlat"])
def test_approximate_indexes_keep_high_recall(factory):
    rng = np.random.default_rng(2)
    centers = unit(rng, 64, 32)
    vectors = centers[rng.integers(0, 64, 6000)] + 0.3 * rng.standard_normal((6000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, *ids(6000), embedder="e@1", factory=factory, params=IndexConfig(nprobe=16, k_factor=16))
    assert recall_at_k(index, vectors, k=10, sample=200) >= 0.9


def test_factory_is_chosen_by_size():
    cfg = IndexConfig(exact_max=1000, hnsw_max=100_000)
    assert choose_factory(1000, 256, cfg) == "Flat"
    assert choose_factory(50_000, 256, cfg) == "HNSW32,Flat"
    assert choose_factory(2_000_000, 256, cfg).endswith(",PQ64x8,RFlat")
    assert choose_factory(2_000_000, 225, cfg).endswith(",PQ45x8,RFlat")
    assert choose_factory(10, 256, IndexConfig(factory="IVF16,Flat")) == "IVF16,Flat"


def test_bad_queries_are_parameter_errors():
    index = build_index(unit(np.random.default_rng(3), 10, 8), *ids(10), embedder="e@1")
    with pytest.raises(ParameterError):
        index.search(np.zeros((1, 9), np.float32), 3)
    with pytest.raises(ParameterError):
        index.search(np.zeros((1, 8), np.float32), 0)


def test_files_recorded_beside_the_index_are_verified_at_load_too(tmp_path):
    """The index stage records tracks.parquet and config.json in the manifest: an edited track
    table (say, a path swapped for another file) is refused like a tampered FAISS file."""
    import pandas as pd

    from soundalike.index import record_checksums

    rng = np.random.default_rng(2)
    build_index(unit(rng, 20, 8), *ids(20), embedder="e@1", factory="Flat").save(tmp_path / "idx")
    tracks = tmp_path / "idx" / "tracks.parquet"
    pd.DataFrame({"track_id": ["t0"], "path": ["/music/a.flac"]}).to_parquet(tracks, index=False)
    record_checksums(tmp_path / "idx", ["tracks.parquet"])
    ClipIndex.load(tmp_path / "idx")
    pd.DataFrame({"track_id": ["t0"], "path": ["/etc/passwd"]}).to_parquet(tracks, index=False)
    with pytest.raises(ModelWeightsError, match="tracks.parquet is missing or does not match its checksum"):
        ClipIndex.load(tmp_path / "idx")


def test_factory_that_cannot_be_built_or_trained_is_a_config_error_naming_it():
    """Not a faiss RuntimeError: the CLI prints a ConfigError as one line and exits 2."""
    vectors = unit(np.random.default_rng(4), 50, 225)
    with pytest.raises(ConfigError, match=r"index.factory 'IVF4096,PQ32x8,RFlat' for 225-dim vectors: .*multiple"):
        build_index(vectors, *ids(50), embedder="e@1", factory="IVF4096,PQ32x8,RFlat")
    with pytest.raises(ConfigError, match=r"index.factory 'IVF4096,PQ45x8,RFlat' cannot be trained on 50 vectors"):
        build_index(vectors, *ids(50), embedder="e@1", factory="IVF4096,PQ45x8,RFlat")


def test_factories_documented_in_base_yaml_fit_the_default_mel_embedder():
    import re
    from pathlib import Path

    from soundalike.config import EmbedderConfig
    from soundalike.embedders import create_embedder
    from soundalike.index import factory_error

    dim = create_embedder(EmbedderConfig(name="mel", device="cpu"), clip_s=10.0).dim
    base = (Path(__file__).resolve().parents[1] / "conf" / "base.yaml").read_text()
    line = next(ln for ln in base.splitlines() if ln.strip().startswith("factory:"))
    documented = re.findall(r'"([^"]+)"', line)
    assert "IVF4096,PQ45x8,RFlat" in documented
    for factory in documented:
        assert factory_error(factory, dim) is None, factory
