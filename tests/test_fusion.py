import numpy as np
import pytest

from soundalike.errors import ParameterError
from soundalike.fusion import fuse


def neighbours(table):
    """table: per query clip, a list of (track_id, similarity, clip_start_s)."""
    q = len(table)
    k = max(len(r) for r in table)
    sims = np.full((q, k), -np.inf)
    tids = np.full((q, k), None, dtype=object)
    starts = np.full((q, k), np.nan)
    idx = np.full((q, k), -1)
    for i, row in enumerate(table):
        for j, (tid, sim, start) in enumerate(row):
            sims[i, j], tids[i, j], starts[i, j], idx[i, j] = sim, tid, start, int(start // 10)
    return np.arange(q) * 10.0, sims, tids, starts, idx


def test_votes_and_similarity_are_fused_as_the_reference_method():
    q, sims, tids, starts, idx = neighbours(
        [
            [("a", 0.9, 0.0), ("b", 0.8, 30.0), ("c", 0.5, 0.0)],
            [("a", 0.7, 10.0), ("b", 0.9, 40.0)],
            [("b", 0.6, 50.0)],
        ]
    )
    results = fuse(q, sims, tids, starts, idx, vote_weight=0.2)
    assert [r.track_id for r in results] == ["b", "a", "c"]
    b, a, c = results
    assert (b.votes, a.votes, c.votes) == (3, 2, 1)
    assert b.total_similarity == pytest.approx(2.3) and a.total_similarity == pytest.approx(1.6)
    assert b.combined_score == pytest.approx(1.0)
    assert a.combined_score == pytest.approx(0.2 * 2 / 3 + 0.8 * 1.6 / 2.3)
    assert c.combined_score == pytest.approx(0.2 * 1 / 3 + 0.8 * 0.5 / 2.3)
    assert [(m.query_start_s, m.clip_start_s) for m in b.evidence] == [(0.0, 30.0), (10.0, 40.0), (20.0, 50.0)]
    assert b.evidence[0].distance == pytest.approx(0.2)


def test_a_similarity_rounded_above_one_is_distance_zero_not_minus_zero():
    q, sims, tids, starts, idx = neighbours([[("a", 1.0000001, 0.0)]])
    match = fuse(q, sims, tids, starts, idx, vote_weight=0.2)[0].evidence[0]
    assert match.distance == 0.0 and f"{match.distance:.3f}" == "0.000"


def test_vote_weight_one_ranks_by_votes_only():
    q, sims, tids, starts, idx = neighbours([[("a", 0.99, 0), ("b", 0.1, 0)], [("b", 0.1, 10)]])
    assert fuse(q, sims, tids, starts, idx, vote_weight=1.0)[0].track_id == "b"
    assert fuse(q, sims, tids, starts, idx, vote_weight=0.0)[0].track_id == "a"


def test_ties_are_broken_deterministically_by_track_id():
    q, sims, tids, starts, idx = neighbours([[("z", 0.5, 0), ("m", 0.5, 0), ("a", 0.5, 0)]])
    assert [r.track_id for r in fuse(q, sims, tids, starts, idx)] == ["a", "m", "z"]


def test_excluded_and_missing_neighbours_are_skipped():
    q, sims, tids, starts, idx = neighbours([[("self", 1.0, 0), ("x", 0.4, 0)], [("y", 0.3, 0)]])
    results = fuse(q, sims, tids, starts, idx, exclude_track_ids=["self"], max_results=1)
    assert [r.track_id for r in results] == ["x"] and results[0].combined_score == 1.0
    assert fuse(q, sims, tids, starts, idx, exclude_track_ids=["self", "x", "y"]) == []


@pytest.mark.parametrize("kwargs", [{"max_results": 0}, {"vote_weight": 1.5}, {"vote_weight": -0.1}])
def test_bad_parameters(kwargs):
    q, sims, tids, starts, idx = neighbours([[("a", 1.0, 0)]])
    with pytest.raises(ParameterError):
        fuse(q, sims, tids, starts, idx, **kwargs)
