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


def _sparse_graph_db(path, threshold, n=600):
    """A database of ``n`` clustered goal keys (and 3 observation steps each) opened with
    ``exact_below_rows=threshold``, with a deliberately sparse graph on ``goal`` so that its
    answers differ from the exact ones."""
    rng = np.random.default_rng(21)
    d = trajdb.open(path, durability="buffered", exact_below_rows=threshold)
    d.create_space("goal", dims=DIMS, metric="cosine")
    d.create_space("observation", dims=DIMS, level="step", metric="cosine")
    x = clustered(rng, n)
    obs = clustered(rng, n * 3)
    d.append_many([{"goal": f"g{i}", "outcome": {"success": i % 2 == 0},
                    "steps": [{"observation": f"o{i}.{j}"} for j in range(3)],
                    "keys": {"goal": x[i]}, "step_keys": {"observation": obs[3 * i:3 * i + 3]}}
                   for i in range(n)])
    d.build_graph("goal", m=2, ef_construction=2)
    return d, clustered(rng, 40)


def _differing_query(d, queries):
    for q in queries:
        if d.search("goal", q, 10, exact=True) != d.search_approx("goal", q, 10, ef=10):
            return q
    pytest.fail("the sparse graph found the exact top 10 for every query")


def test_search_chooses_the_scan_below_the_threshold_and_the_graph_at_it(path):
    d, queries = _sparse_graph_db(path, threshold=601)
    q = _differing_query(d, queries)
    exact = d.search("goal", q, 10, exact=True)
    graph = d.search_approx("goal", q, 10, ef=10)
    # 600 rows < 601: the default (exact=None) scans, even with a graph.
    assert d.search_with_path("goal", q, 10, ef=10) == (exact, "exact_below_threshold")
    assert d.search("goal", q, 10, ef=10) == exact
    assert d.stats()["exact_below_rows"] == 601
    goal = next(s for s in d.stats()["spaces"] if s["name"] == "goal")
    assert (goal["graph_rows"], goal["auto_uses_graph"]) == (600, False)
    # exact=False walks the graph whatever the size.
    assert d.search_with_path("goal", q, 10, exact=False, ef=10) == (graph, "graph")
    d.close()
    # At the threshold: the graph; exact=True overrides it.
    d = trajdb.open(path, exact_below_rows=600)
    assert d.search_with_path("goal", q, 10, ef=10) == (graph, "graph")
    assert d.search("goal", q, 10, ef=10) == graph
    assert d.search_with_path("goal", q, 10, exact=True) == (exact, "exact_requested")
    goal = next(s for s in d.stats()["spaces"] if s["name"] == "goal")
    assert goal["auto_uses_graph"] is True
    obs = next(s for s in d.stats()["spaces"] if s["name"] == "observation")
    assert (obs["graph_rows"], obs["auto_uses_graph"]) == (None, False)
    # A space without a graph: exact.
    step_q = queries[1]
    hits, p = d.search_with_path("observation", step_q, 5)
    assert p == "exact_no_graph"
    assert hits == d.search("observation", step_q, 5, exact=True)
    # The positional calls of before still work and keep their meaning at small sizes.
    assert len(d.search("goal", q, 3)) == 3
    d.close()


def _ranked(examples):
    return [(e.id, e.matched_step, e.score) for e in examples]


def test_retrieve_goes_through_the_graphs_only_when_every_key_space_qualifies(path):
    d, queries = _sparse_graph_db(path, threshold=0)
    keys, step = {"goal": queries[0]}, ("observation", queries[1])
    exact = _ranked(d.retrieve(keys, step, k=5, exact=True))
    got, p = d.retrieve_with_path(keys, step, k=5)
    assert p == {"path": "exact_no_graph", "decided_by": "observation", "spaces": {}}
    assert _ranked(got) == exact
    d.build_graph("observation", m=8, ef_construction=32)
    got, p = d.retrieve_with_path(keys, step, k=5, ef=32)
    assert p == {"path": "graph", "decided_by": None,
                 "spaces": {"goal": "graph", "observation": "graph"}}
    assert _ranked(got) == _ranked(d.retrieve_approx(keys, step, k=5, ef=32))
    got, p = d.retrieve_with_path(keys, step, k=5, exact=True)
    assert p["path"] == "exact_requested"
    assert _ranked(got) == exact
    d.close()


def test_a_retrieve_over_independent_keys_is_answered_exactly_and_says_so(db):
    # A clustered goal and a plan drawn apart from it: the graphs' candidates cannot be
    # shown to hold the top k, so the exact retrieve answers and the path says why.
    rng = np.random.default_rng(21)
    db.create_space("goal", dims=DIMS, metric="cosine")
    db.create_space("plan", dims=DIMS, metric="cosine")
    x = clustered(rng, N)
    plans = rng.standard_normal((N, DIMS)).astype(np.float32)
    db.append_many([{"goal": f"g{i}", "outcome": {"success": True},
                     "keys": {"goal": x[i], "plan": plans[i]}} for i in range(N)])
    db.build_graph("goal", m=12, ef_construction=64)
    db.build_graph("plan", m=12, ef_construction=64)
    q = clustered(rng, 1)[0]
    keys = {"goal": q, "plan": rng.standard_normal(DIMS).astype(np.float32)}
    got, p = db.retrieve_with_path(keys, k=10, exact=False, ef=16)
    assert p == {"path": "exact_candidates_short", "decided_by": None,
                 "spaces": {"goal": "graph", "plan": "graph"}}
    assert _ranked(got) == _ranked(db.retrieve(keys, k=10, exact=True))


def test_zero_ef_and_zero_k_on_approximate_paths_are_refused_by_name(db):
    db.create_space("goal", dims=4)
    db.append({"goal": "g", "keys": {"goal": [1.0, 0.0, 0.0, 0.0]}})
    v = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    for call in (
        lambda: db.search("goal", v, 3, ef=0),
        lambda: db.search("goal", v, 3, exact=False, ef=0),
        lambda: db.search_approx("goal", v, 3, ef=0),
        lambda: db.retrieve({"goal": v}, ef=0),
        lambda: db.retrieve_approx({"goal": v}, ef=0),
    ):
        with pytest.raises(ValueError, match="ef must be at least 1"):
            call()
    for call in (
        lambda: db.search("goal", v, 0, exact=False),
        lambda: db.search_approx("goal", v, 0),
        lambda: db.retrieve({"goal": v}, k=0, exact=False),
        lambda: db.retrieve_approx({"goal": v}, k=0),
    ):
        with pytest.raises(trajdb.InvalidInputError, match="k must be at least 1"):
            call()
    # A negative ef or k names the range that holds for them (at least 1), not 0.. .
    for call in (
        lambda: db.search("goal", v, 3, ef=-1),
        lambda: db.search_approx("goal", v, 3, ef=-1),
        lambda: db.retrieve_approx({"goal": v}, ef=-5),
    ):
        with pytest.raises(trajdb.InvalidInputError, match=r"^ef must be an integer in 1..=2\*\*64-1 \(the beam width of the graph walk\), got -"):
            call()
    with pytest.raises(trajdb.InvalidInputError, match=r"^k must be an integer in 1..=2\*\*64-1 \(the number of results\), got -1"):
        db.search_approx("goal", v, -1)
    with pytest.raises(trajdb.InvalidInputError, match=r"^ef must be an integer in 1..=2\*\*64-1 .*, got 18446744073709551616"):
        db.search_approx("goal", v, 3, ef=2**64)
    # build_graph's parameters name their own ranges.
    with pytest.raises(trajdb.InvalidInputError, match=r"^m must be an integer in 2..=128 .*, got -1"):
        db.build_graph("goal", m=-1)
    with pytest.raises(trajdb.InvalidInputError, match=r"^ef_construction must be an integer in m..=4096 .*, got -3"):
        db.build_graph("goal", ef_construction=-3)
    # The exact search keeps answering k=0 with nothing.
    assert db.search("goal", v, 0) == []
    assert db.search("goal", v, 0, exact=True) == []


def test_a_non_bool_outcome_names_the_argument(db):
    db.create_space("goal", dims=2)
    i = db.append({"goal": "g", "keys": {"goal": [1.0, 0.0]}})
    with pytest.raises(TypeError, match=r"success must be a bool .*got str"):
        db.set_outcome(i, "yes")
    with pytest.raises(TypeError, match=r"success must be a bool .*got int"):
        db.set_outcome(i, 1)
    db.set_outcome(i, np.bool_(True))
    assert db.get(i)["outcome"]["success"] is True
    db.set_outcome(i, None)
    ep = db.begin_episode()
    with pytest.raises(TypeError, match="success must be a bool"):
        db.set_episode_outcome(ep, "no")
    with db.episode() as e:
        with pytest.raises(TypeError, match="Episode.outcome must be a bool"):
            e.outcome = "yes"
        e.outcome = False
        assert e.outcome is False


def test_check_graphs_names_a_graph_damaged_past_its_header_before_any_search(path):
    d, queries = _sparse_graph_db(path, threshold=0)
    d.close()
    import os
    g = os.path.join(path, "graph-0.idx")
    b = bytearray(open(g, "rb").read())
    b[64 + 8] ^= 0x01
    open(g, "wb").write(bytes(b))
    d = trajdb.open(path, read_only=True)
    goal = next(s for s in d.stats()["spaces"] if s["name"] == "goal")
    assert goal["graph_discarded"] is None  # the header alone looks right
    d.check_graphs()
    goal = next(s for s in d.stats()["spaces"] if s["name"] == "goal")
    assert "checksum" in goal["graph_discarded"]
    # Searches go on (the graph restarts empty; the rows it does not cover are scanned),
    # and the first one says why the graph's speed is gone, once per handle, as the CLI does.
    with pytest.warns(RuntimeWarning, match="the graph index of `goal` was not used: .*checksum.*build_graph"):
        assert len(d.search("goal", queries[0], 10, exact=False)) == 10
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(d.search("goal", queries[1], 10, exact=False)) == 10
        assert len(d.search_approx("goal", queries[1], 10)) == 10
    d.close()
