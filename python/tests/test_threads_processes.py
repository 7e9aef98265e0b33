"""Threads search while one appends (the GIL is released), and a read-only handle in a
second process follows a writer."""

import subprocess
import sys
import textwrap
import threading

import numpy as np

import trajdb

DIMS = 32


def record(rng, i):
    return {"goal": f"g{i}", "outcome": {"success": True},
            "keys": {"goal": rng.standard_normal(DIMS).astype(np.float32)}}


def test_threads_search_while_one_appends(path):
    rng = np.random.default_rng(5)
    with trajdb.open(path, durability="group") as db:
        db.create_space("goal", dims=DIMS, metric="dot")
        db.append_many([record(rng, i) for i in range(500)])
        stop = threading.Event()
        errors = []
        seen = []

        def searcher(seed):
            r = np.random.default_rng(seed)
            last = 0
            try:
                while not stop.is_set():
                    q = r.standard_normal(DIMS).astype(np.float32)
                    hits = db.search("goal", q, k=10)
                    assert len(hits) == 10
                    assert all(hits[i].score >= hits[i + 1].score for i in range(9))
                    n = len(db)
                    assert n >= last  # never goes back
                    last = n
                    seen.append(n)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        for i in range(200):
            db.append(record(rng, 500 + i))
            if i % 50 == 0:
                db.append_many([record(rng, 10_000 + i + j) for j in range(10)])
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(db) == 500 + 200 + 40
        assert seen and max(seen) <= len(db)
        # Every appended trajectory is findable by its own key.
        for tid in (1, 600, 740):
            key = db.get(tid)["keys"]["goal"]
            assert tid in [h.id for h in db.search("goal", key, k=740)]


READER = textwrap.dedent("""
    import sys, time, trajdb
    path, want = sys.argv[1], int(sys.argv[2])
    db = trajdb.open(path, read_only=True)
    print("start", len(db), flush=True)
    deadline = time.time() + 60
    while len(db) < want and time.time() < deadline:
        sys.stdin.readline()
        db.refresh()
        print("now", len(db), flush=True)
    hits = db.search("goal", [1.0] + [0.0] * 31, k=3)
    print("hits", [h.id for h in hits], flush=True)
""")


def test_read_only_handle_in_a_second_process(path):
    rng = np.random.default_rng(6)
    with trajdb.open(path) as db:
        db.create_space("goal", dims=DIMS, metric="dot")
        db.append_many([record(rng, i) for i in range(10)])
        p = subprocess.Popen([sys.executable, "-c", READER, path, "30"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().split() == ["start", "10"]
        for step in (10, 10):
            db.append_many([record(rng, i) for i in range(step)])
            p.stdin.write("\n")
            p.stdin.flush()
            line = p.stdout.readline().split()
            assert line[0] == "now" and int(line[1]) == len(db)
        best = [1.0] + [0.0] * 31
        want = [h.id for h in db.search("goal", best, k=3)]
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        assert out.strip() == f"hits {want}"
