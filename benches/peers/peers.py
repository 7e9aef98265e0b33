"""trajdb against its peers, in one process, on the same files (`make_data.py` writes them).

    python benches/peers/make_data.py            # once: target/peers-data
    python benches/peers/peers.py [--dir target/peers-data] [--sizes 10000,100000]
        [--retrieve 10000x10,100000x10,10000x40] [--reps 5] [--open-reps 5]
        [--approx-ef 64,256] [--json results.json] [--quick]

Three comparisons, every system single-threaded, calls interleaved (each repetition runs
every system on every query, rotating which goes first) so machine noise lands on all alike;
each figure is the median (p10, p90) of single calls:

(a) exact top-10 search over N unit 384-d rows: trajdb `Database.search` (cosine key space)
    against numpy (float32 matmul + argpartition) and faiss `IndexFlatIP`. The answers must
    agree (ids at every rank; a differing id only where the two scores tie within 1e-5), and
    the sequential read rate of the same bytes is measured in the same run (numpy sum and a
    BLAS dot of the memory-resident rows), so each system's scan rate can be given as a
    fraction of it.
(b) the paper's retrieve (goal + plan trajectory keys, observation step key, k 10, window 5,
    success filter): trajdb `Database.retrieve` against the reference stack rebuilt from the
    paper's description (SQLite tables of trajectories and steps, an index on the steps'
    trajectory id, one faiss flat index per key; each key's top k x 3 x 2 = 60, a candidate
    missing from a key's list given that list's worst score, mean over keys, the success
    filter in SQL, the best step per candidate from its step rows, re-rank by trajectory +
    step score, the window cut from the step table) and against an exact numpy brute force.
    The numpy answer checks trajdb's exactness; the reference's recall@10 is measured
    against trajdb's exact answer; trajdb's step rows scored per call are reported when the
    binding has `retrieve_with_work`. With `--approx-ef`, the same retrieve through graph
    indexes (`exact=False`, one graph per key space, built first) at each beam width, timed
    against trajdb's exact call and the reference, with its recall@10 against the exact answer.
(c) open, warm: trajdb read-only and writer open (then close) against the reference's
    `faiss.read_index` of its three indexes + `sqlite3.connect` and one query.

Only trajdb's public Python API is used, so the run measures whatever trajdb is installed.
"""

import os

# Single-threaded BLAS and OpenMP: set before numpy (and faiss) are imported.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
           "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import trajdb  # noqa: E402

try:
    import faiss  # noqa: E402
except ImportError:  # pragma: no cover - the README says to install it
    sys.exit("peers.py needs faiss: pip install faiss-cpu")

faiss.omp_set_num_threads(1)

DIMS = 384
K = 10
WINDOW = 5
FETCH = K * 3 * 2  # the reference's over-fetch: k x 3 (outcome filter) x 2 (step key)
TIE = 1e-5
# Sequential reads of the search table, the fastest of which is the run's read rate: a
# pairwise float32 sum, a BLAS dot with ones, and a column sum (rows added into one row).
READS = ("read_sum", "read_dot", "read_rows")
BUILD_CHUNK = 2_000
now = time.perf_counter_ns


# ------------------------------------------------------------------------------------------
# Machine and statistics


def machine():
    flags = set()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    shown = sorted(f for f in flags if f in {"avx2", "avx512f", "fma", "avx512bw", "avx512vl",
                                              "avx512_vnni", "avx512_bf16", "neon", "asimd"})
    return {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "flags": shown,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": getattr(faiss, "__version__", "?"),
        "sqlite": sqlite3.sqlite_version,
        "trajdb_has_retrieve_with_work": hasattr(trajdb.Database, "retrieve_with_work"),
        "also_installed": {m: importlib.util.find_spec(m) is not None
                           for m in ("hnswlib", "usearch")},
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def stats(ns):
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "calls": int(a.size)}


def interleaved(systems, queries, reps):
    """Times each system's call on each query, `reps` times, rotating the order of systems
    on every query. Returns {name: [ns, ...]} and the last result per (name, query)."""
    times = {name: [] for name in systems}
    last = {}
    names = list(systems)
    turn = 0
    for _ in range(reps):
        for qi, q in enumerate(queries):
            for j in range(len(names)):
                name = names[(turn + j) % len(names)]
                t0 = now()
                out = systems[name](q)
                times[name].append(now() - t0)
                last[(name, qi)] = out
            turn += 1
    return times, last


def warm_then_interleaved(systems, queries, reps, warm=2):
    """Calls every system on the first `warm` queries untimed (page cache, maps, code), then
    [`interleaved`]; returns its times and results and the load average before and after."""
    for q in queries[:warm]:
        for f in systems.values():
            f(q)
    load0 = loadavg()
    times, last = interleaved(systems, queries, reps)
    return times, last, load0, loadavg()


# ------------------------------------------------------------------------------------------
# (a) exact top-10 search


def trajdb_search_store(root, x):
    path = os.path.join(root, "stores", f"trajdb-search-{len(x)}")
    if not built(path):
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.time()
        with trajdb.open(path, durability="buffered") as db:
            db.create_space("key", dims=DIMS)
            for a in range(0, len(x), BUILD_CHUNK):
                db.append_many({"goal": f"row {i}", "keys": {"key": x[i]}}
                               for i in range(a, min(a + BUILD_CHUNK, len(x))))
            db.sync()
        mark_built(path)
        print(f"  built {path} ({time.time() - t0:.0f} s)", flush=True)
    return path


def same_ranking(ids_a, sc_a, ids_b, sc_b):
    """True when two top-k lists agree: scores rank by rank within TIE, and the same ids
    above the k-th score (+ TIE). Ids whose scores tie within TIE may come in either order,
    and a tie at the k-th place may keep either id."""
    if len(ids_a) != len(ids_b):
        return False
    if any(abs(float(a) - float(b)) > TIE for a, b in zip(sc_a, sc_b)):
        return False
    if not ids_a:
        return True
    edge = min(float(sc_a[-1]), float(sc_b[-1])) + TIE
    return ({i for i, s in zip(ids_a, sc_a) if s > edge} ==
            {i for i, s in zip(ids_b, sc_b) if s > edge})


def store_stamp():
    """Names the installed trajdb build, so stores built by another build are rebuilt."""
    native = getattr(trajdb, "_native", None)
    f = getattr(native, "__file__", None) or trajdb.__file__
    st = os.stat(f)
    return f"{f} {st.st_size} {st.st_mtime_ns}"


def built(path):
    try:
        with open(os.path.join(path, ".peers-complete")) as f:
            return f.read() == store_stamp()
    except OSError:
        return False


def mark_built(path):
    with open(os.path.join(path, ".peers-complete"), "w") as f:
        f.write(store_stamp())


def bench_search(root, n, reps, rows_path):
    x = np.ascontiguousarray(np.load(rows_path))
    qs = np.load(os.path.join(root, "search-queries.npy"))
    assert x.shape == (n, DIMS) and x.dtype == np.float32
    path = trajdb_search_store(root, x)
    db = trajdb.open(path, read_only=True)
    index = faiss.IndexFlatIP(DIMS)
    index.add(x)
    ones = np.ones(x.size, dtype=np.float32)
    flat = x.reshape(-1)

    def t_trajdb(q):
        h = db.search("key", q, k=K, exact=True)
        return [e.id - 1 for e in h], [e.score for e in h]

    def t_numpy(q):
        s = x @ q
        top = np.argpartition(-s, K)[:K]
        top = top[np.lexsort((top, -s[top]))]
        return top.tolist(), s[top].tolist()

    def t_faiss(q):
        d, i = index.search(q[None, :], K)
        return i[0].tolist(), d[0].tolist()

    def read_sum(_q):
        return float(flat.sum())

    def read_dot(_q):
        return float(np.dot(flat, ones))

    def read_rows(_q):
        return float(np.add.reduce(x, axis=0)[0])

    systems = {"trajdb": t_trajdb, "numpy": t_numpy, "faiss": t_faiss,
               "read_sum": read_sum, "read_dot": read_dot, "read_rows": read_rows}
    times, last, load0, load_b = warm_then_interleaved(systems, qs, reps, warm=4)
    agree = {"numpy": 0, "faiss": 0}
    max_diff = {"numpy": 0.0, "faiss": 0.0}
    for qi in range(len(qs)):
        ti, ts = last[("trajdb", qi)]
        for peer in agree:
            pi, ps = last[(peer, qi)]
            agree[peer] += same_ranking(ti, ts, pi, ps)
            max_diff[peer] = max(max_diff[peer], float(np.max(np.abs(np.subtract(ts, ps)))))
    out = {name: stats(t) for name, t in times.items()}
    nbytes = x.nbytes
    read_ms = min(out[r]["median_ms"] for r in READS)
    for name in ("trajdb", "numpy", "faiss") + READS:
        ms = out[name]["median_ms"]
        out[name]["gb_per_s"] = nbytes / (ms * 1e6)
        out[name]["fraction_of_read_rate"] = read_ms / ms
    db.close()
    return {"rows": n, "bytes": nbytes, "queries": len(qs), "reps": reps,
            "load_before": load0, "load_after": load_b, "systems": out,
            "identical": {p: f"{agree[p]}/{len(qs)}" for p in agree},
            "max_score_diff": max_diff}


# ------------------------------------------------------------------------------------------
# (b) the paper's retrieve


def records(goal, plan, obs, success, steps, a, b):
    for i in range(a, b):
        yield {
            "goal": f"goal {i}",
            "plan": f"plan {i}",
            "task": f"task {i}",
            "env": "peers",
            "outcome": {"success": bool(success[i])},
            "steps": [{"observation": f"observation {i}.{j}", "reasoning": f"thought {i}.{j}",
                       "action": f"action {i}.{j}"} for j in range(steps)],
            "final_observation": f"end {i}",
            "keys": {"goal": goal[i], "plan": plan[i]},
            "step_keys": {"observation": obs[i * steps:(i + 1) * steps]},
        }


def build_trajdb_retrieve(path, goal, plan, obs, success, steps):
    if built(path):
        return
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.time()
    with trajdb.open(path, durability="buffered") as db:
        db.create_space("goal", dims=DIMS)
        db.create_space("plan", dims=DIMS)
        db.create_space("observation", level="step", dims=DIMS)
        chunk = max(1, BUILD_CHUNK * 10 // steps)
        for a in range(0, len(goal), chunk):
            ids = db.append_many(records(goal, plan, obs, success, steps, a,
                                         min(a + chunk, len(goal))))
            assert ids[0] == a + 1, "trajdb ids must be row + 1 (a fresh database)"
        db.sync()
    mark_built(path)
    print(f"  built {path} ({time.time() - t0:.0f} s)", flush=True)


def build_reference(path, goal, plan, obs, success, steps):
    if os.path.exists(os.path.join(path, ".peers-complete")):
        return
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    t0 = time.time()
    con = sqlite3.connect(os.path.join(path, "trajectories.sqlite"))
    con.executescript("""
        CREATE TABLE trajectories (
            id INTEGER PRIMARY KEY, task TEXT, env TEXT, goal TEXT NOT NULL, plan TEXT,
            final_observation TEXT, success INTEGER NOT NULL,
            goal_embedding BLOB, plan_embedding BLOB);
        CREATE TABLE steps (
            id INTEGER PRIMARY KEY, trajectory_id INTEGER NOT NULL, idx INTEGER NOT NULL,
            observation TEXT, reasoning TEXT, action TEXT, observation_embedding BLOB);
    """)
    n = len(goal)
    for a in range(0, n, 1000):
        b = min(a + 1000, n)
        con.executemany(
            "INSERT INTO trajectories VALUES (?,?,?,?,?,?,?,?,?)",
            ((i + 1, f"task {i}", "peers", f"goal {i}", f"plan {i}", f"end {i}",
              int(success[i]), goal[i].tobytes(), plan[i].tobytes()) for i in range(a, b)))
        con.executemany(
            "INSERT INTO steps (trajectory_id, idx, observation, reasoning, action, "
            "observation_embedding) VALUES (?,?,?,?,?,?)",
            ((i + 1, j, f"observation {i}.{j}", f"thought {i}.{j}", f"action {i}.{j}",
              obs[i * steps + j].tobytes()) for i in range(a, b) for j in range(steps)))
    con.execute("CREATE INDEX steps_trajectory ON steps(trajectory_id)")
    con.commit()
    con.close()
    for name, rows in (("goal", goal), ("plan", plan), ("observation", obs)):
        index = faiss.IndexFlatIP(DIMS)
        index.add(np.ascontiguousarray(rows))
        faiss.write_index(index, os.path.join(path, f"{name}.index"))
    open(os.path.join(path, ".peers-complete"), "w").close()
    print(f"  built {path} ({time.time() - t0:.0f} s)", flush=True)


class Reference:
    """The reference stack: SQLite + one faiss flat index per key, over-fetch x6."""

    def __init__(self, path):
        self.con = sqlite3.connect(os.path.join(path, "trajectories.sqlite"))
        self.con.execute("SELECT max(id) FROM trajectories").fetchone()
        self.index = {name: faiss.read_index(os.path.join(path, f"{name}.index"))
                      for name in ("goal", "plan", "observation")}

    def close(self):
        self.con.close()

    def retrieve(self, keys, step_key, k=K, window=WINDOW):
        # Trajectory level: each key's top FETCH; a candidate missing from one key's list
        # gets that list's worst score; mean over keys; the FETCH best.
        cand = {}
        lists = []
        for name, q in keys.items():
            d, i = self.index[name].search(q[None, :], FETCH)
            lists.append((dict(zip((int(r) + 1 for r in i[0] if r >= 0), d[0].tolist())),
                          float(d[0][-1])))
        for found, _ in lists:
            for tid in found:
                cand[tid] = 0.0
        for tid in cand:
            cand[tid] = sum(found.get(tid, worst) for found, worst in lists) / len(lists)
        top = sorted(cand.items(), key=lambda c: (-c[1], c[0]))[:FETCH]
        ids = [t for t, _ in top]
        # Success filter in SQL.
        ok = {r[0] for r in self.con.execute(
            f"SELECT id FROM trajectories WHERE success = 1 AND id IN ({','.join('?' * len(ids))})",
            ids)}
        kept = [(t, s) for t, s in top if t in ok]
        # Step match: each candidate's step rows through the index on trajectory_id.
        name, qs = step_key
        scored = []
        for tid, ts in kept:
            rows = self.con.execute(
                "SELECT idx, observation_embedding FROM steps WHERE trajectory_id = ? ORDER BY idx",
                (tid,)).fetchall()
            if not rows:
                continue
            e = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            s = e @ qs
            m = int(np.argmax(s))
            scored.append((ts + float(s[m]), tid, ts, float(s[m]), rows[m][0], len(rows)))
        scored.sort(key=lambda c: (-c[0], c[1]))
        out = []
        for score, tid, ts, ss, m, nsteps in scored[:k]:
            t = self.con.execute(
                "SELECT goal, plan, task, env, final_observation FROM trajectories WHERE id = ?",
                (tid,)).fetchone()
            start, end = max(0, m - window), min(nsteps, m + window + 1)
            st = self.con.execute(
                "SELECT observation, reasoning, action FROM steps WHERE trajectory_id = ? "
                "AND idx >= ? AND idx < ? ORDER BY idx", (tid, start, end)).fetchall()
            out.append({"id": tid, "score": score, "traj_score": ts, "step_score": ss,
                        "matched_step": m, "window": (start, end),
                        "trajectory": {"goal": t[0], "plan": t[1], "task": t[2], "env": t[3],
                                       "final_observation": t[4],
                                       "steps": [{"observation": o, "reasoning": r, "action": a}
                                                 for o, r, a in st]}})
        return out


def numpy_retrieve(goal, plan, obs, success, steps, qg, qp, qo, k=K, window=WINDOW):
    """The exact answer by brute force: every row scored (float32 matmul), then the success
    filter; trajectory score = mean of the two key similarities in f64, + the best step's
    (the first on ties); earlier id first on tied totals. Returns [(id, score,
    matched_step, window)] best first: the definition trajdb's retrieve must reproduce."""
    ts = ((goal @ qg).astype(np.float64) + (plan @ qp).astype(np.float64)) / 2.0
    s = (obs @ qo).reshape(len(goal), steps)
    m = s.argmax(axis=1)
    best = s[np.arange(len(m)), m].astype(np.float64)
    total = (ts + best).astype(np.float32)
    idx = np.flatnonzero(success)
    if len(idx) > k:
        idx = idx[np.argpartition(-total[idx], k)[:k]]
    idx = idx[np.lexsort((idx, -total[idx]))]
    return [(int(j) + 1, float(total[j]), int(m[j]),
             (max(0, int(m[j]) - window), min(steps, int(m[j]) + window + 1))) for j in idx]


def bench_retrieve(root, n, steps, reps, open_reps, quick, approx_efs=()):
    d = os.path.join(root, f"retrieve-{n}x{steps}")
    goal = np.load(os.path.join(d, "goal.npy"))
    plan = np.load(os.path.join(d, "plan.npy"))
    obs = np.load(os.path.join(d, "observation.npy"))
    success = np.load(os.path.join(d, "success.npy"))
    qz = np.load(os.path.join(d, "queries.npz"))
    queries = list(zip(qz["q_goal"], qz["q_plan"], qz["q_observation"]))
    if quick:
        queries = queries[:8]
    tpath = os.path.join(root, "stores", f"trajdb-retrieve-{n}x{steps}")
    rpath = os.path.join(root, "stores", f"reference-retrieve-{n}x{steps}")
    build_trajdb_retrieve(tpath, goal, plan, obs, success, steps)
    build_reference(rpath, goal, plan, obs, success, steps)
    success_idx = np.flatnonzero(success)

    db = trajdb.open(tpath, read_only=True)
    ref = Reference(rpath)
    with_work = hasattr(db, "retrieve_with_work")

    def t_trajdb(q):
        return db.retrieve({"goal": q[0], "plan": q[1]}, ("observation", q[2]), k=K, window=WINDOW, exact=True)

    def t_reference(q):
        return ref.retrieve({"goal": q[0], "plan": q[1]}, ("observation", q[2]))

    def t_numpy(q):
        return numpy_retrieve(goal, plan, obs, success, steps, q[0], q[1], q[2])

    systems = {"trajdb": t_trajdb, "reference": t_reference, "numpy_exact": t_numpy}
    times, last, load0, load_b = warm_then_interleaved(systems, queries, reps)

    exact_match, recall, work_rows, work_trajs, work_bounds, checked_text = 0, [], [], [], [], 0
    for qi, q in enumerate(queries):
        got = last[("trajdb", qi)]
        want = last[("numpy_exact", qi)]
        if same_ranking([(e.id, e.matched_step, tuple(e.window)) for e in got],
                        [e.score for e in got],
                        [(i, m, win) for i, _, m, win in want], [sc for _, sc, _, _ in want]):
            exact_match += 1
        ids = {e.id for e in got}
        ref_ids = {e["id"] for e in last[("reference", qi)]}
        recall.append(len(ids & ref_ids) / max(1, len(ids)))
        for e in got:  # the window's text is the right trajectory's steps
            a, b = e.window
            if [s["observation"] for s in e.trajectory["steps"]] == \
                    [f"observation {e.id - 1}.{j}" for j in range(a, b)]:
                checked_text += 1
        if with_work:
            _, work = db.retrieve_with_work({"goal": q[0], "plan": q[1]}, ("observation", q[2]),
                                            k=K, window=WINDOW)
            work_rows.append(work["step_rows_scored"])
            work_trajs.append(work["trajectories_visited"])
            work_bounds.append(work.get("step_bounds_read", -1))
    db.close()
    approx = bench_retrieve_approx(tpath, queries, last, t_reference, approx_efs, reps) if approx_efs else None
    ref.close()
    out = {name: stats(t) for name, t in times.items()}
    result = {
        "trajectories": n, "steps": steps, "queries": len(queries), "reps": reps,
        "load_before": load0, "load_after": load_b, "systems": out,
        "trajdb_equals_numpy_exact": f"{exact_match}/{len(queries)}",
        "trajdb_windows_text_ok": f"{checked_text}/{sum(len(last[('trajdb', i)]) for i in range(len(queries)))}",
        "reference_recall_at_10": {"mean": float(np.mean(recall)), "min": float(np.min(recall)),
                                   "max": float(np.max(recall))},
        "step_rows_total": int(n * steps),
        "step_rows_of_successes": int(len(success_idx) * steps),
    }
    if with_work:
        result["trajdb_step_rows_scored"] = {"median": float(np.median(work_rows)),
                                             "min": int(np.min(work_rows)),
                                             "max": int(np.max(work_rows))}
        result["trajdb_trajectories_visited"] = {"median": float(np.median(work_trajs))}
        result["trajdb_step_bounds_read"] = {"median": float(np.median(work_bounds))}
    if approx is not None:
        result["approx"] = approx
    del goal, plan, obs
    gc.collect()
    result["open"] = bench_open(tpath, rpath, open_reps)
    return result


def bench_retrieve_approx(tpath, queries, last, t_reference, efs, reps):
    """The same retrieve through the graph indexes (`exact=False`, beam width `ef`): builds
    (or catches up) a graph per key space, then times each ef against trajdb's exact call and
    the reference in one interleaved run, and measures recall@10 against the exact answer
    (`last[("numpy_exact", qi)]`, which trajdb's exact call equals)."""
    t0 = now()
    with trajdb.open(tpath) as w:
        for space in ("goal", "plan", "observation"):
            w.build_graph(space)
    build_s = (now() - t0) / 1e9
    db = trajdb.open(tpath, read_only=True)

    def call(q, exact, ef=64):
        return db.retrieve({"goal": q[0], "plan": q[1]}, ("observation", q[2]), k=K, window=WINDOW,
                           exact=exact, ef=ef)

    _, path = db.retrieve_with_path({"goal": queries[0][0], "plan": queries[0][1]},
                                    ("observation", queries[0][2]), k=K, window=WINDOW, exact=False)
    systems = {"trajdb_exact": lambda q: call(q, True), "reference": t_reference}
    for ef in efs:
        systems[f"approx_ef_{ef}"] = (lambda e: lambda q: call(q, False, e))(ef)
    times, got, load0, load_b = warm_then_interleaved(systems, queries, reps)
    out = {"graph_build_s": build_s, "path": path["path"], "load_before": load0, "load_after": load_b,
           "systems": {name: stats(t) for name, t in times.items()}, "by_ef": []}
    for ef in efs:
        rec, same = [], 0
        for qi in range(len(queries)):
            want = last[("numpy_exact", qi)]
            ids = [e.id for e in got[(f"approx_ef_{ef}", qi)]]
            rec.append(len(set(ids) & {i for i, _, _, _ in want}) / max(1, len(want)))
            same += ids == [i for i, _, _, _ in want]
        out["by_ef"].append({"ef": ef, "recall_at_10": {"mean": float(np.mean(rec)), "min": float(np.min(rec))},
                             "same_ranking": f"{same}/{len(queries)}"})
    db.close()
    return out


# ------------------------------------------------------------------------------------------
# (c) open


def bench_open(tpath, rpath, reps):
    def trajdb_read_only():
        trajdb.open(tpath, read_only=True).close()

    def trajdb_writer():
        trajdb.open(tpath, create=False).close()

    def reference():
        con = sqlite3.connect(os.path.join(rpath, "trajectories.sqlite"))
        con.execute("SELECT max(id) FROM trajectories").fetchone()
        idx = [faiss.read_index(os.path.join(rpath, f"{name}.index"))
               for name in ("goal", "plan", "observation")]
        con.close()
        del idx

    systems = {"trajdb_read_only": trajdb_read_only, "trajdb_writer": trajdb_writer,
               "reference": reference}
    for f in systems.values():  # warm: every file in the page cache
        f()
    times, _ = interleaved({k: (lambda _q, f=f: f()) for k, f in systems.items()}, [None], reps)
    return {name: stats(t) for name, t in times.items()}


# ------------------------------------------------------------------------------------------
# Report


def ms(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def fmt(s):
    return f"{ms(s['median_ms'])} ms ({ms(s['p10_ms'])}-{ms(s['p90_ms'])})"


def load1(r):
    """The 1-minute load average before / after a part."""
    return f"{r['load_before'].split()[0]} / {r['load_after'].split()[0]}"


def ratio(a, b):
    """How many times slower a is than b (a/b), or faster when below 1."""
    r = a["median_ms"] / b["median_ms"]
    return f"{r:.2f}x" if r >= 0.995 else f"{r:.2f}x ({1 / r:.2f}x faster)"


def report(res):
    m = res["machine"]
    lines = [f"machine: {m['cpu']}, {m['cpus']} CPUs, flags {' '.join(m['flags']) or '-'}; "
             f"numpy {m['numpy']}, faiss {m['faiss']}, SQLite {m['sqlite']}; "
             f"load {res['load_start']} (start) / {res['load_end']} (end)",
             "medians of single calls (p10-p90); ratio = trajdb / peer (>1: trajdb slower)", ""]
    if res["search"]:
        lines += ["exact top-10 search, 384-d f32, single-threaded", "",
                  "| rows | trajdb | numpy | faiss IndexFlatIP | read rate (same bytes) | trajdb / numpy | trajdb / faiss | trajdb, fraction of read rate | faiss, fraction | identical (numpy, faiss) | load 1 min, before / after |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["search"]:
            s = r["systems"]
            rd = min((s[r] for r in READS), key=lambda x: x["median_ms"])
            lines.append(
                f"| {r['rows']:,} | {fmt(s['trajdb'])} | {fmt(s['numpy'])} | {fmt(s['faiss'])} | "
                f"{ms(rd['median_ms'])} ms = {rd['gb_per_s']:.1f} GB/s | {ratio(s['trajdb'], s['numpy'])} | "
                f"{ratio(s['trajdb'], s['faiss'])} | {s['trajdb']['fraction_of_read_rate']:.2f} | "
                f"{s['faiss']['fraction_of_read_rate']:.2f} | {r['identical']['numpy']}, {r['identical']['faiss']} | "
                f"{load1(r)} |")
        lines.append("")
    if res["retrieve"]:
        lines += ["the paper's retrieve: goal + plan keys, observation step key, k 10, window 5, success filter", "",
                  "| trajectories x steps | trajdb | reference (SQLite + faiss, over-fetch x6) | numpy exact | trajdb / reference | trajdb / numpy | trajdb step rows scored per call (of successes' rows) | trajdb step bounds read per call (of successes) | trajdb = exact | reference recall@10 | load 1 min, before / after |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["retrieve"]:
            s = r["systems"]
            b = r.get("trajdb_step_bounds_read")
            btxt = f"{b['median']:,.0f} of {r['step_rows_of_successes'] // r['steps']:,}" if b else "n/a"
            w = r.get("trajdb_step_rows_scored")
            wtxt = f"{w['median']:,.0f} ({w['min']:,}-{w['max']:,}) of {r['step_rows_of_successes']:,}" if w else "n/a"
            rc = r["reference_recall_at_10"]
            lines.append(
                f"| {r['trajectories']:,} x {r['steps']} | {fmt(s['trajdb'])} | {fmt(s['reference'])} | "
                f"{fmt(s['numpy_exact'])} | {ratio(s['trajdb'], s['reference'])} | {ratio(s['trajdb'], s['numpy_exact'])} | "
                f"{wtxt} | {btxt} | {r['trajdb_equals_numpy_exact']} | {rc['mean']:.0%} ({rc['min']:.0%}-{rc['max']:.0%}) | "
                f"{load1(r)} |")
        if any("approx" in r for r in res["retrieve"]):
            lines += ["", "the same retrieve through the graph indexes (exact=False), timed in one interleaved run with trajdb's exact call and the reference", "",
                      "| trajectories x steps | ef | approximate | trajdb exact | reference | exact / approximate | reference / approximate | recall@10 against the exact answer (mean, min) | same ranking as exact | graphs built (s) | load 1 min, before / after |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in res["retrieve"]:
                ap = r.get("approx")
                if not ap:
                    continue
                s = ap["systems"]
                for e in ap["by_ef"]:
                    a = s[f"approx_ef_{e['ef']}"]
                    lines.append(
                        f"| {r['trajectories']:,} x {r['steps']} | {e['ef']} | {fmt(a)} | {fmt(s['trajdb_exact'])} | "
                        f"{fmt(s['reference'])} | {ratio(s['trajdb_exact'], a)} | {ratio(s['reference'], a)} | "
                        f"{e['recall_at_10']['mean']:.3f} ({e['recall_at_10']['min']:.1f}) | {e['same_ranking']} | "
                        f"{ap['graph_build_s']:.0f} | {load1(ap)} |")
        lines += ["", "open, warm (files in the page cache), then close", "",
                  "| trajectories x steps | trajdb read-only | trajdb writer | reference: faiss read_index x3 + SQLite | read-only / reference | writer / reference |",
                  "|---|---|---|---|---|---|"]
        for r in res["retrieve"]:
            o = r["open"]
            lines.append(
                f"| {r['trajectories']:,} x {r['steps']} | {fmt(o['trajdb_read_only'])} | {fmt(o['trajdb_writer'])} | "
                f"{fmt(o['reference'])} | {ratio(o['trajdb_read_only'], o['reference'])} | "
                f"{ratio(o['trajdb_writer'], o['reference'])} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="target/peers-data", help="make_data.py's folder; stores go in DIR/stores")
    ap.add_argument("--sizes", default="10000,100000", help="search tables to run (rows); 1000000 with make_data --big")
    ap.add_argument("--retrieve", default="10000x10,100000x10,10000x40", help="retrieve data sets to run")
    ap.add_argument("--reps", type=int, default=5, help="repetitions over the 64 queries")
    ap.add_argument("--open-reps", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="8 queries, 1 repetition, 2 opens: a smoke run")
    ap.add_argument("--approx-ef", default="",
                    help="also time the retrieve through graph indexes at these beam widths (e.g. 64,256); "
                         "builds a graph per key space of each retrieve store first")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.open_reps = 1, 2
    res = {"machine": machine(), "load_start": loadavg(), "search": [], "retrieve": []}
    print(f"load {res['load_start']}; flags {' '.join(res['machine']['flags'])}", flush=True)
    for n in [int(s) for s in a.sizes.split(",") if s]:
        p = os.path.join(a.dir, f"search-{n}.npy")
        if not os.path.exists(p):
            sys.exit(f"{p} is missing: run make_data.py --sizes {n} first")
        print(f"search {n:,} rows ...", flush=True)
        res["search"].append(bench_search(a.dir, n, 1 if a.quick else a.reps, p))
        gc.collect()
    for part in filter(None, a.retrieve.split(",")):
        n, s = (int(v) for v in part.lower().split("x"))
        if not os.path.isdir(os.path.join(a.dir, f"retrieve-{n}x{s}")):
            sys.exit(f"retrieve-{n}x{s} is missing: run make_data.py --retrieve {part} first")
        print(f"retrieve {n:,} x {s} ...", flush=True)
        efs = [int(e) for e in a.approx_ef.split(",") if e]
        res["retrieve"].append(bench_retrieve(a.dir, n, s, a.reps, a.open_reps, a.quick, efs))
        gc.collect()
    res["load_end"] = loadavg()
    print()
    print(report(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"\nwrote {a.json}")
    bad = [r for r in res["search"] if any(not v.startswith(f"{r['queries']}/") for v in r["identical"].values())]
    bad += [r for r in res["retrieve"] if not r["trajdb_equals_numpy_exact"].startswith(f"{r['queries']}/")]
    if bad:
        print("\nMISMATCH: trajdb's answers differ from the exact peers (see the tables)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
