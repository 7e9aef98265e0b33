"""Python-side benchmark of the trajdb package, shaped like the Rust criterion benches so the
figures compare: `benches/search.rs` (top-10 over 10k x 384 cosine trajectory keys, half
successes) and `benches/append.rs` (trajectories of 10 steps with a goal key and three step
keys of 384 dims, counted in steps per second).

    python python/bench/bench.py [--dir /tmp/trajdb-bench] [--reps N] [--json]

Prints medians: search latency (no filter, success_only), append_many rate per durability
mode (and a plain append loop), and the speed-up of 2 threads searching over 1.
"""

import argparse
import json
import os
import shutil
import statistics
import threading
import time

import numpy as np

import trajdb

DIMS = 384
N_SEARCH = 10_000
STEPS = 10
STEP_KEYS = ("observation", "reasoning", "action")


def fresh(root, name):
    path = os.path.join(root, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def unit_rows(rng, n):
    m = rng.standard_normal((n, DIMS)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def bench_search(root, reps):
    rng = np.random.default_rng(0x5EA)
    keys = unit_rows(rng, N_SEARCH)
    with trajdb.open(fresh(root, "search"), durability="buffered") as db:
        db.create_space("goal", dims=DIMS)
        db.append_many({"goal": f"g{i}", "outcome": {"success": i % 2 == 0}, "keys": {"goal": keys[i]}}
                       for i in range(N_SEARCH))
        queries = unit_rows(rng, 64)
        out = {}
        for label, kw in (("top10_no_filter", {}), ("top10_success_only", {"success_only": True})):
            for q in queries[:8]:
                db.search("goal", q, k=10, **kw)  # warm up
            times = []
            for i in range(reps):
                q = queries[i % len(queries)]
                t = time.perf_counter()
                db.search("goal", q, k=10, **kw)
                times.append(time.perf_counter() - t)
            out[label] = statistics.median(times) * 1e3
        # Two threads searching: the same number of queries, split; GIL released in the scan.
        n_q = max(reps, 200)

        def work(count, i0):
            for i in range(count):
                db.search("goal", queries[(i0 + i) % len(queries)], k=10)

        def timed(threads):
            ts = [threading.Thread(target=work, args=(n_q // threads, j * 7)) for j in range(threads)]
            t = time.perf_counter()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            return time.perf_counter() - t

        one = statistics.median(timed(1) for _ in range(5))
        two = statistics.median(timed(2) for _ in range(5))
        out["queries_per_s_1_thread"] = n_q / one
        out["queries_per_s_2_threads"] = n_q / two
        out["parallel_speedup_2_threads"] = one / two
    # The binding's own cost per call: the same call on a 1-row space, where the scan is
    # negligible (vector copy, GIL release and re-take, result objects).
    with trajdb.open(fresh(root, "overhead"), durability="buffered") as db:
        db.create_space("goal", dims=DIMS)
        db.append({"goal": "one", "keys": {"goal": keys[0]}})
        q = queries[0]
        for _ in range(100):
            db.search("goal", q, k=10)
        times = []
        for _ in range(max(reps, 1000)):
            t = time.perf_counter()
            db.search("goal", q, k=10)
            times.append(time.perf_counter() - t)
        out["search_call_overhead_us"] = statistics.median(times) * 1e6
    return out


def trajectory_pool(rng, n=64):
    pool = []
    for i in range(n):
        pool.append({
            "goal": f"goal {i}", "env": "bench", "task": f"t{i}",
            "outcome": {"success": i % 2 == 0},
            "steps": [{"observation": f"o{j}", "reasoning": f"r{j}", "action": f"a{j}"} for j in range(STEPS)],
            "keys": {"goal": unit_rows(rng, 1)[0]},
            "step_keys": {k: unit_rows(rng, STEPS) for k in STEP_KEYS},
        })
    return pool


def bench_append(root, n_traj, runs):
    rng = np.random.default_rng(0xA99E4D)
    pool = trajectory_pool(rng)
    out = {}
    for mode in ("buffered", "sync", "group"):
        rates = []
        for r in range(runs):
            with trajdb.open(fresh(root, f"append-{mode}"), durability=mode) as db:
                db.create_space("goal", dims=DIMS)
                for k in STEP_KEYS:
                    db.create_space(k, level="step", dims=DIMS)
                batch = [pool[i % len(pool)] for i in range(n_traj)]
                t = time.perf_counter()
                db.append_many(batch)
                rates.append(n_traj * STEPS / (time.perf_counter() - t))
        out[f"append_many_steps_per_s_{mode}"] = statistics.median(rates)
    # A plain loop of append calls (one commit, and in "sync" one fsync, each).
    for mode in ("buffered", "sync"):
        n = min(n_traj, 2000)
        with trajdb.open(fresh(root, f"append1-{mode}"), durability=mode) as db:
            db.create_space("goal", dims=DIMS)
            for k in STEP_KEYS:
                db.create_space(k, level="step", dims=DIMS)
            t = time.perf_counter()
            for i in range(n):
                db.append(pool[i % len(pool)])
            out[f"append_loop_steps_per_s_{mode}"] = n * STEPS / (time.perf_counter() - t)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/trajdb-py-bench")
    p.add_argument("--reps", type=int, default=300, help="search calls per median")
    p.add_argument("--append", type=int, default=10_000, help="trajectories per append_many")
    p.add_argument("--runs", type=int, default=3, help="append_many runs per median")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    res = {"load_before": os.getloadavg()}
    res.update(bench_search(a.dir, a.reps))
    res.update(bench_append(a.dir, a.append, a.runs))
    res["load_after"] = os.getloadavg()
    shutil.rmtree(a.dir, ignore_errors=True)
    if a.json:
        print(json.dumps(res))
        return
    for k, v in res.items():
        if isinstance(v, float):
            unit = " ms" if k.startswith("top10") else ""
            print(f"{k:38s} {v:12,.3f}{unit}")
        else:
            print(f"{k:38s} {v}")


if __name__ == "__main__":
    main()
