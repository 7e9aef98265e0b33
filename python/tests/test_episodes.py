"""Episodes and the usage counters Q against a recount from what the test logged, including
outcomes set late, changed and cleared, and after reopening."""

import numpy as np
import pytest

import trajdb


def recount(log, outcomes):
    """log: list of (episode, [ids]); outcomes: episode -> True/False/None."""
    c = {}
    seen = {}
    for ep, ids in log:
        for i in ids:
            u = c.setdefault(i, [0, 0, 0, 0])
            u[0] += 1
            seen.setdefault(i, set()).add(ep)
            if outcomes.get(ep) is not None:
                u[2] += 1
                if outcomes[ep]:
                    u[3] += 1
    return {i: (u[0], len(seen[i]), u[2], u[3], (u[3] / u[2]) if u[2] else None) for i, u in c.items()}


def check(db, log, outcomes):
    want = recount(log, outcomes)
    got = {i: (u.retrievals, u.episodes, u.labelled_retrievals, u.success_retrievals, u.q)
           for i, u in db.utilities().items()}
    assert got == want
    for i in want:
        u = db.utility(i)
        assert (u.retrievals, u.episodes, u.labelled_retrievals, u.success_retrievals, u.q) == want[i]
    with pytest.raises(trajdb.NotFoundError):
        db.utility(10_000)


def test_episodes_and_q_match_a_recount(path):
    rng = np.random.default_rng(7)
    log, outcomes = [], {}
    with trajdb.open(path) as db:
        db.create_space("goal", dims=4, metric="dot")
        db.create_space("observation", level="step", dims=4, metric="dot")
        db.append_many([{
            "goal": f"g{i}", "outcome": {"success": True},
            "steps": [{"observation": "a"}, {"observation": "b"}],
            "keys": {"goal": rng.standard_normal(4).astype(np.float32)},
            "step_keys": {"observation": rng.standard_normal((2, 4)).astype(np.float32)},
        } for i in range(30)])
        for _ in range(12):
            with db.episode() as ep:
                ids = []
                for stage in ("plan", "reason", "act"):
                    ex = db.retrieve({"goal": rng.standard_normal(4).astype(np.float32)},
                                     ("observation", rng.standard_normal(4).astype(np.float32)), k=3)
                    ep.log(ex, stage=stage)
                    ids += [e.id for e in ex]
                hits = db.search("goal", rng.standard_normal(4).astype(np.float32), k=2)
                ep.log(hits)
                ids += [h.id for h in hits]
                log.append((ep.id, ids))
                r = rng.random()
                if r < 0.4:
                    ep.outcome = True
                elif r < 0.8:
                    ep.outcome = False
                outcomes[ep.id] = ep.outcome
        check(db, log, outcomes)
        # Late outcomes: set, change and clear.
        late = [e for e, o in outcomes.items() if o is None]
        for e in late:
            db.set_episode_outcome(e, True)
            outcomes[e] = True
        first = log[0][0]
        db.set_episode_outcome(first, None)
        outcomes[first] = None
        check(db, log, outcomes)
        eps = db.episodes()
        assert [e["id"] for e in eps] == [e for e, _ in log]
        assert [e["outcome"] for e in eps] == [outcomes[e] for e, _ in log]
        assert [[ev["id"] for ev in e["events"]] for e in eps] == [ids for _, ids in log]
        assert {ev["stage"] for ev in eps[0]["events"]} == {"plan", "reason", "act", "other"}
        assert all(ev["step"] is not None for ev in eps[0]["events"][:9])
    with trajdb.open(path) as db:
        check(db, log, outcomes)


def test_episode_ids_and_logging_by_id(db):
    db.create_space("goal", dims=2)
    a = db.append({"goal": "a", "keys": {"goal": [1.0, 0.0]}})
    e1 = db.begin_episode()
    ep = db.episode()
    assert ep.id == e1 + 1 and ep.outcome is None
    db.log_retrievals(e1, [a, a], stage="plan")
    db.set_episode_outcome(e1, False)
    assert db.utility(a).q == 0.0 and db.utility(a).retrievals == 2
    ep.log([a])
    ep.outcome = True
    assert db.utility(a).q == 1 / 3
    assert repr(ep) == f"Episode(id={ep.id}, outcome=True)"
