"""Database.merge_from: two databases with overlapping ids merge once each, a repeat adds
nothing, Q in the merged database equals a recount over both sources' episodes, and a source
with a different key space is refused without writing anything."""

import numpy as np
import pytest

import trajdb


def fill(db, tag, n, episodes, rng):
    db.create_space("goal", dims=4, metric="dot")
    db.append_many([{
        "goal": f"{tag} {i}", "outcome": {"success": bool(i % 2)},
        "keys": {"goal": rng.standard_normal(4).astype(np.float32)},
    } for i in range(n)])
    log = []
    for _ in range(episodes):
        with db.episode() as ep:
            hits = db.search("goal", rng.standard_normal(4).astype(np.float32), k=3)
            ep.log(hits)
            r = rng.random()
            ep.outcome = True if r < 0.5 else (False if r < 0.8 else None)
            log.append((ep.outcome, [h.id for h in hits]))
    return log


def q_of(log):
    s, l = {}, {}
    for outcome, ids in log:
        if outcome is None:
            continue
        for i in ids:
            l[i] = l.get(i, 0) + 1
            s[i] = s.get(i, 0) + int(outcome)
    return {i: s[i] / l[i] for i in l}


def test_merge_from_adds_each_source_once_with_q_over_both(tmp_path):
    rng = np.random.default_rng(16)
    with trajdb.open(str(tmp_path / "a")) as a, trajdb.open(str(tmp_path / "b")) as b, \
            trajdb.open(str(tmp_path / "m")) as m:
        la = fill(a, "a", 12, 10, rng)
        lb = fill(b, "b", 12, 10, rng)
        assert a.origin != b.origin and a.origin is not None
        ra = m.merge_from(a)
        rb = m.merge_from(b)
        assert (ra["trajectories"], rb["trajectories"]) == (12, 12)
        assert (ra["episodes"], rb["episodes"]) == (10, 10)
        assert m.merge_from(a)["commits"] == 0
        assert m.stats()["trajectories"] == 24
        # Ids 1..12 came from a, 13..24 from b, in commit order.
        want = {i: q for i, q in q_of(la).items()}
        want.update({i + 12: q for i, q in q_of(lb).items()})
        got = {i: u.q for i, u in m.utilities().items() if u.q is not None}
        assert got == pytest.approx(want, abs=0)
        assert m.get(13)["goal"] == "b 0"


def test_merge_from_refuses_a_different_key_space_and_writes_nothing(tmp_path):
    with trajdb.open(str(tmp_path / "a")) as a, trajdb.open(str(tmp_path / "m")) as m:
        a.create_space("goal", dims=8, metric="dot")
        m.create_space("goal", dims=4, metric="dot")
        before = m.stats()["commit_seq"]
        with pytest.raises(trajdb.InvalidInputError, match="key space `goal`.*nothing was merged"):
            m.merge_from(a)
        assert m.stats()["commit_seq"] == before
        with pytest.raises(trajdb.InvalidInputError, match="itself"):
            m.merge_from(m)
