"""Search and retrieve against a numpy brute-force reference on random data: exact ids and
order, scores to float32 rounding; filters applied inside the scan."""

import numpy as np
import pytest

import trajdb
from conftest import similarity

N = 400
DIMS = 24
STEP_DIMS = 8


def build(db, metric, rng):
    db.create_space("goal", dims=DIMS, metric=metric)
    db.create_space("plan", dims=DIMS, metric=metric)
    db.create_space("observation", level="step", dims=STEP_DIMS, metric=metric)
    recs = []
    for i in range(N):
        n_steps = int(rng.integers(1, 9))
        recs.append({
            "goal": f"goal {i}",
            "env": ["kitchen", "garden", "lab"][i % 3],
            "task": f"task{i % 7}",
            "outcome": {"success": bool(rng.random() < 0.5)},
            "provenance": {"kind": ["self_generated", "imported"][i % 2]},
            "steps": [{"observation": f"o{j}"} for j in range(n_steps)],
            "keys": {
                "goal": rng.standard_normal(DIMS).astype(np.float32),
                "plan": rng.standard_normal(DIMS).astype(np.float32),
            },
            "step_keys": {"observation": rng.standard_normal((n_steps, STEP_DIMS)).astype(np.float32)},
        })
    ids = db.append_many(recs)
    assert ids == list(range(1, N + 1))
    return recs


@pytest.fixture(params=["cosine", "dot", "l2"])
def metric(request):
    return request.param


def reference_top(scores, mask, k):
    idx = np.flatnonzero(mask)
    order = idx[np.lexsort((idx, -scores[idx]))]  # score descending, earlier first on ties
    return order[:k]


def test_search_matches_brute_force(path, metric):
    rng = np.random.default_rng(1)
    with trajdb.open(path, durability="buffered") as db:
        recs = build(db, metric, rng)
        goals = np.stack([r["keys"]["goal"] for r in recs])
        for _ in range(10):
            q = rng.standard_normal(DIMS).astype(np.float32)
            ref = similarity(metric, goals, q)
            for k in (1, 10, 57):
                hits = db.search("goal", q, k=k)
                want = reference_top(ref, np.ones(N, bool), k)
                assert [h.id for h in hits] == [int(i) + 1 for i in want]
                np.testing.assert_allclose([h.score for h in hits], ref[want], rtol=2e-5, atol=2e-5)
                assert all(h.step is None for h in hits)


def test_step_search_matches_brute_force(path, metric):
    rng = np.random.default_rng(2)
    with trajdb.open(path, durability="buffered") as db:
        recs = build(db, metric, rng)
        rows, owner = [], []
        for i, r in enumerate(recs):
            for j, v in enumerate(r["step_keys"]["observation"]):
                rows.append(v)
                owner.append((i + 1, j))
        rows = np.stack(rows)
        q = rng.standard_normal(STEP_DIMS).astype(np.float32)
        ref = similarity(metric, rows, q)
        want = reference_top(ref, np.ones(len(rows), bool), 20)
        hits = db.search("observation", q, k=20)
        assert [(h.id, h.step) for h in hits] == [owner[i] for i in want]
        np.testing.assert_allclose([h.score for h in hits], ref[want], rtol=2e-5, atol=2e-5)


def test_filters_inside_the_scan_return_k(path):
    rng = np.random.default_rng(3)
    with trajdb.open(path, durability="buffered") as db:
        recs = build(db, "cosine", rng)
        goals = np.stack([r["keys"]["goal"] for r in recs])
        ids = np.arange(1, N + 1)
        success = np.array([r["outcome"]["success"] for r in recs])
        env = np.array([r["env"] for r in recs])
        task = np.array([r["task"] for r in recs])
        prov = np.array([r["provenance"]["kind"] for r in recs])
        exclude = [int(i) for i in rng.choice(ids, 60, replace=False)]
        cases = [
            ({"success_only": True}, success),
            ({"env": "lab"}, env == "lab"),
            ({"task": "task3"}, task == "task3"),
            ({"provenance": "imported"}, prov == "imported"),
            ({"exclude": exclude}, ~np.isin(ids, exclude)),
            ({"success_only": True, "env": "garden", "exclude": exclude},
             success & (env == "garden") & ~np.isin(ids, exclude)),
            ({"env": "nowhere"}, np.zeros(N, bool)),
        ]
        q = rng.standard_normal(DIMS).astype(np.float32)
        ref = similarity("cosine", goals, q)
        for kwargs, mask in cases:
            k = 25
            hits = db.search("goal", q, k=k, **kwargs)
            want = reference_top(ref, mask, k)
            assert len(hits) == min(k, int(mask.sum())), kwargs
            assert [h.id for h in hits] == [int(i) + 1 for i in want], kwargs


def test_as_of_reads_an_earlier_view(db):
    db.create_space("goal", dims=2, metric="dot")
    db.append({"goal": "a", "keys": {"goal": [1.0, 0.0]}})
    seq = db.commit_seq
    db.append({"goal": "b", "keys": {"goal": [2.0, 0.0]}})
    assert [h.id for h in db.search("goal", [1.0, 0.0])] == [2, 1]
    assert [h.id for h in db.search("goal", [1.0, 0.0], as_of=seq)] == [1]


def reference_retrieve(recs, metric, keys, step_key, k, window, mask):
    """The method's retrieval in numpy: mean trajectory-key similarity + best step."""
    n = len(recs)
    traj = np.zeros(n)
    for name, q in keys.items():
        traj += similarity(metric, np.stack([r["keys"][name] for r in recs]), q)
    traj /= max(len(keys), 1)
    best = np.full(n, -np.inf)
    best_step = np.zeros(n, int)
    if step_key is not None:
        name, q = step_key
        for i, r in enumerate(recs):
            s = similarity(metric, r["step_keys"][name], q)
            best_step[i] = int(np.argmax(s))  # first best
            best[i] = s[best_step[i]]
        total = traj + best
    else:
        total = traj
    top = reference_top(total, mask, k)
    out = []
    for i in top:
        n_steps = len(recs[i]["steps"])
        if step_key is not None:
            m = best_step[i]
            win = (max(m - window, 0), min(m + window + 1, n_steps))
        else:
            win = (0, n_steps)
        out.append((int(i) + 1, total[i], traj[i], win, best_step[i] if step_key else None))
    return out


def test_retrieve_matches_reference(path, metric):
    rng = np.random.default_rng(4)
    with trajdb.open(path, durability="buffered") as db:
        recs = build(db, metric, rng)
        success = np.array([r["outcome"]["success"] for r in recs])
        for trial in range(6):
            keys = {"goal": rng.standard_normal(DIMS).astype(np.float32)}
            if trial % 2:
                keys["plan"] = rng.standard_normal(DIMS).astype(np.float32)
            step_key = ("observation", rng.standard_normal(STEP_DIMS).astype(np.float32)) if trial < 4 else None
            window = int(rng.integers(0, 4))
            got = db.retrieve(keys, step_key, k=8, window=window)
            want = reference_retrieve(recs, metric, keys, step_key, 8, window, success)
            assert [e.id for e in got] == [w[0] for w in want]
            np.testing.assert_allclose([e.score for e in got], [w[1] for w in want], rtol=5e-5, atol=5e-5)
            np.testing.assert_allclose([e.traj_score for e in got], [w[2] for w in want], rtol=5e-5, atol=5e-5)
            assert [e.window for e in got] == [w[3] for w in want]
            assert [e.matched_step for e in got] == [w[4] for w in want]
            for e in got:
                steps = recs[e.id - 1]["steps"][e.window[0]:e.window[1]]
                assert e.trajectory["steps"] == [dict(s, reasoning="", action="", reward=None) for s in steps]
                assert e.trajectory["keys"] == {} and e.trajectory["goal"] == f"goal {e.id - 1}"
        # success_only=False widens the pool.
        allk = db.retrieve({"goal": recs[0]["keys"]["goal"]}, k=N, success_only=False)
        assert len(allk) == N


def test_search_many_answers_each_query_as_search_does(path, metric):
    rng = np.random.default_rng(5)
    with trajdb.open(path, durability="buffered") as db:
        build(db, metric, rng)
        qs = rng.standard_normal((9, DIMS)).astype(np.float32)
        for k in (1, 10, 57):
            many = db.search_many("goal", qs, k=k, success_only=True)
            assert len(many) == len(qs)
            for q, got in zip(qs, many):
                assert got == db.search("goal", q, k=k, success_only=True)
        with pytest.raises(trajdb.InvalidInputError, match=r"queries\[0\].*5 dimensions"):
            db.search_many("goal", qs[:, :5], k=3)
        bad = qs.copy()
        bad[4, 1] = np.nan
        with pytest.raises(trajdb.InvalidInputError, match=r"queries\[4\]"):
            db.search_many("goal", bad, k=3)


def test_retrieve_with_work_returns_retrieve_results_and_bounded_step_work(path):
    """retrieve_with_work gives retrieve's examples unchanged, and a work count that can
    only be right: no more step rows than the qualifying trajectories hold, at least the
    winners' own step rows, and zero without a step key."""
    rng = np.random.default_rng(7)
    with trajdb.open(path, durability="buffered") as db:
        recs = build(db, "cosine", rng)
        success = np.array([r["outcome"]["success"] for r in recs])
        steps_of_successes = sum(len(r["steps"]) for r, s in zip(recs, success) if s)
        keys = {"goal": rng.standard_normal(DIMS).astype(np.float32)}
        step_key = ("observation", rng.standard_normal(STEP_DIMS).astype(np.float32))
        got, work = db.retrieve_with_work(keys, step_key, k=5, window=2)
        want = db.retrieve(keys, step_key, k=5, window=2)
        assert [(e.id, e.score, e.matched_step, e.window) for e in got] == \
            [(e.id, e.score, e.matched_step, e.window) for e in want]
        assert set(work) == {"step_rows_scored", "trajectories_visited", "step_bounds_read"}
        winners_rows = sum(len(recs[e.id - 1]["steps"]) for e in got)
        assert winners_rows <= work["step_rows_scored"] <= steps_of_successes
        assert len(got) <= work["trajectories_visited"] <= int(success.sum())
        assert 0 <= work["step_bounds_read"] <= len(recs)
        _, no_step = db.retrieve_with_work(keys, k=5)
        assert no_step == {"step_rows_scored": 0, "trajectories_visited": 0, "step_bounds_read": 0}
        with pytest.raises(trajdb.InvalidInputError):
            db.retrieve_with_work({"observation": step_key[1]})
