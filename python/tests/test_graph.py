"""The graph index from Python: build_graph, search_approx against search (recall, exact
scores, k returned under a filter), drop_graph."""

import numpy as np
import pytest

import trajdb

N = 2000
DIMS = 32


def clustered(rng, n, clusters=20):
    centres = rng.standard_normal((clusters, DIMS)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    return (centres[which] + 0.3 * rng.standard_normal((n, DIMS))).astype(np.float32)


def test_search_approx_finds_the_exact_top_10_with_exact_scores(db):
    rng = np.random.default_rng(5)
    db.create_space("goal", dims=DIMS, metric="cosine")
    x = clustered(rng, N)
    db.append_many([{"goal": f"g{i}", "outcome": {"success": i % 10 == 0},
                     "keys": {"goal": x[i]}} for i in range(N)])
    status = db.build_graph("goal", m=12, ef_construction=64)
    assert status == {"nodes": N, "rows": N, "m": 12, "ef_construction": 64}
    queries = clustered(rng, 30)
    found = total = 0
    for q in queries:
        exact = db.search("goal", q, 10)
        approx = db.search_approx("goal", q, 10, ef=128)
        assert len(approx) == 10
        scores = {h.id: h.score for h in exact}
        for h in approx:
            if h.id in scores:
                assert h.score == scores[h.id]
        found += len({h.id for h in approx} & set(scores))
        total += 10
    assert found / total >= 0.95
    hits = db.search_approx("goal", queries[0], 10, ef=32, success_only=True)
    assert len(hits) == 10
    assert all(db.get(h.id)["outcome"]["success"] for h in hits)
    db.drop_graph("goal")
    assert db.search_approx("goal", queries[0], 10) == db.search("goal", queries[0], 10)


def test_build_graph_refuses_bad_parameters_by_name(db):
    db.create_space("goal", dims=4)
    with pytest.raises(trajdb.InvalidInputError, match="graph m"):
        db.build_graph("goal", m=1)
    with pytest.raises(trajdb.InvalidInputError, match="ef_construction"):
        db.build_graph("goal", m=16, ef_construction=8)
    with pytest.raises(trajdb.InvalidInputError):
        db.build_graph("nope")


def test_retrieve_approx_with_a_wide_beam_returns_what_retrieve_returns(db):
    rng = np.random.default_rng(8)
    db.create_space("goal", dims=DIMS, metric="cosine")
    db.create_space("observation", dims=DIMS, level="step", metric="cosine")
    x = clustered(rng, 600)
    obs = clustered(rng, 600 * 3)
    db.append_many([{"goal": f"g{i}", "outcome": {"success": i % 2 == 0},
                     "steps": [{"observation": f"o{i}.{j}"} for j in range(3)],
                     "keys": {"goal": x[i]}, "step_keys": {"observation": obs[3 * i:3 * i + 3]}}
                    for i in range(600)])
    db.build_graph("goal", m=12, ef_construction=64)
    db.build_graph("observation", m=12, ef_construction=64)
    q = clustered(rng, 2)
    exact = db.retrieve({"goal": q[0]}, ("observation", q[1]), k=5)
    approx = db.retrieve_approx({"goal": q[0]}, ("observation", q[1]), k=5, ef=600)
    assert [(e.id, e.matched_step) for e in approx] == [(e.id, e.matched_step) for e in exact]
    with pytest.raises(TypeError, match="got bool"):
        db.retrieve_approx({"goal": q[0]}, ef=True)
