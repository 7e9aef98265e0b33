"""Approximate top-10 search: trajdb's graph index against hnswlib, faiss IndexHNSWFlat and
usearch, single-threaded, on the same clustered synthetic 384-d unit vectors and queries.

    python -m venv /work/venv-ann && /work/venv-ann/bin/pip install numpy faiss-cpu hnswlib usearch maturin
    (cd python && maturin develop --release)          # trajdb's binding, in that venv
    python benches/peers/ann.py [--n 100000] [--queries 200] [--grid 16:16,16:32,16:64,16:128]
        [--efc 100] [--dir target/ann] [--systems trajdb,hnswlib,faiss,usearch] [--warmup 1]
        [--reps 1] [--json out.json]

Data (synthetic, not sentence embeddings): `--clusters` centres drawn from a standard normal,
each point a centre plus normal noise of scale `--noise`, normalised; queries drawn the same
way. Cosine (inner product of unit vectors) everywhere. Ground truth: exact numpy top-10.

Each system runs in its own child process (so its peak memory, `ru_maxrss`, is its own), in
this order: build (trajdb: append the rows, then `build_graph`; peers: add the rows), save,
open the saved index (median of 5), then for every (M, ef) of the grid every query once
untimed (`--warmup` passes, default 1) and `--reps` times (default 1) timing single calls;
p50 latency over all timed calls, recall@10 against the exact answer. After each system's
child, a fresh process opens the saved index and answers every query at the largest ef with
no data in memory: its peak RSS and its anonymous and mapped-file resident memory are the
memory to serve the index. The p50 at recall@10 0.95 is interpolated linearly between the
grid points around it, and the QPS ratio against trajdb printed. trajdb's index is mapped, not read at open: its first pass over
the queries (page faults) is timed and printed apart. M is hnswlib's / faiss's
M and usearch's connectivity; trajdb's `m` gives the same bottom-layer degree (2 M).
trajdb also runs the same queries with a success filter passing 1 row in 10.
Each system's timed call is its library call returning its own result type (trajdb: a list
of Hit objects with id, step and exact score; the peers: arrays of labels); turning a result
into row ids for recall happens outside the timing.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

K = 10
now = time.perf_counter


def data(args):
    if args.vectors:
        # Given vectors (e.g. make_data.py --minilm): the first --n rows, the first
        # --queries queries, normalised.
        x = np.load(args.vectors, mmap_mode="r")[: args.n].astype(np.float32)
        q = np.load(args.query_vectors)[: args.queries].astype(np.float32)
        if x.shape[0] < args.n or q.shape[0] < args.queries or x.shape[1] != args.dims:
            raise SystemExit(f"{args.vectors}: {x.shape}, {args.query_vectors}: {q.shape}; "
                             f"need {args.n} and {args.queries} rows of {args.dims}")
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        return x, q
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dims)).astype(np.float32)

    def draw(n):
        which = rng.integers(0, args.clusters, n)
        x = centres[which] + args.noise * rng.standard_normal((n, args.dims)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(args.n), draw(args.queries)


def truth(x, q, mask=None):
    s = q @ x.T
    if mask is not None:
        s[:, ~mask] = -np.inf
    idx = np.argpartition(-s, K, axis=1)[:, :K]
    return [set(r.tolist()) for r in idx]


def grid(args):
    return [tuple(int(v) for v in g.split(":")) for g in args.grid.split(",")]


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


WARMUP = [1]
REPS = [1]


def trajdb_ids(hits):
    """Row ids (0-based, as the peers' labels) of trajdb's hits: done outside the timing, as
    every system's timed call is its library call returning its own result type."""
    return [h.id - 1 for h in hits]


def timed_queries(fn, q, gt, ids=lambda r: r):
    # Untimed passes first (`--warmup`, same for every system): the p50 is of a warm index,
    # whether it was read into memory (hnswlib, faiss, usearch) or is mapped (trajdb, whose
    # first touches of a page are page faults; the cold first pass is reported apart).
    for _ in range(WARMUP[0]):
        for v in q:
            fn(v)
    lat, hit = [], 0
    for rep in range(REPS[0]):
        for i in range(len(q)):
            t = now()
            res = fn(q[i])
            lat.append(now() - t)
            if rep == 0:
                hit += len(gt[i] & set(int(v) for v in ids(res)))
    return float(np.median(lat) * 1e3), hit / (K * len(q))


def opened(fn, reps=5):
    ts = []
    obj = None
    for _ in range(reps):
        obj = None
        t = now()
        obj = fn()
        ts.append(now() - t)
    return float(np.median(ts) * 1e3), obj


def run_trajdb(args, x, q, gt, m, path):
    import trajdb

    out = {}
    shutil.rmtree(path, ignore_errors=True)
    base = rss_mb()
    t = now()
    with trajdb.open(path, durability="buffered") as db:
        db.create_space("goal", dims=args.dims, metric="cosine")
        for a in range(0, len(x), 2000):
            db.append_many([{"goal": "", "outcome": {"success": (a + i) % 10 == 0},
                             "keys": {"goal": x[a + i]}} for i in range(min(2000, len(x) - a))])
        out["append_s"] = now() - t
        t = now()
        db.build_graph("goal", m=m, ef_construction=args.efc)
        out["build_s"] = now() - t
    out["open_ms"], db = opened(lambda: trajdb.open(path, read_only=True))
    mask = np.arange(len(x)) % 10 == 0
    gt_f = truth(x, q, mask)
    t = now()
    for v in q:
        db.search_approx("goal", v, K, ef=64)  # first use checks the graph; pages fault in
    out["cold_pass_ms"] = (now() - t) * 1e3
    res = []
    for M, ef in grid(args):
        if M != m:
            continue
        p50, rec = timed_queries(lambda v: db.search_approx("goal", v, K, ef=ef), q, gt, trajdb_ids)
        p50f, recf = timed_queries(
            lambda v: db.search_approx("goal", v, K, ef=ef, success_only=True), q, gt_f, trajdb_ids)
        res.append({"M": M, "ef": ef, "p50_ms": p50, "recall": rec, "filtered_p50_ms": p50f,
                    "filtered_recall": recf})
    p50, rec = timed_queries(lambda v: db.search("goal", v, K, exact=True), q, gt, trajdb_ids)
    out["exact_p50_ms"] = p50
    out["runs"] = res
    out["peak_rss_mb"] = rss_mb()
    out["rss_before_mb"] = base
    out["graph_file_mb"] = os.path.getsize(os.path.join(path, "graph-0.idx")) / 2**20
    return out


def run_hnswlib(args, x, q, gt, m, path):
    import hnswlib

    out = {}
    base = rss_mb()
    idx = hnswlib.Index(space="ip", dim=args.dims)
    t = now()
    idx.init_index(max_elements=len(x), M=m, ef_construction=args.efc, random_seed=1)
    idx.set_num_threads(1)
    idx.add_items(x, np.arange(len(x)), num_threads=1)
    out["build_s"] = now() - t
    f = path + ".hnswlib"
    idx.save_index(f)
    peak_build = rss_mb()
    del idx

    def load():
        i = hnswlib.Index(space="ip", dim=args.dims)
        i.load_index(f, max_elements=len(x))
        return i

    out["open_ms"], idx = opened(load)
    idx.set_num_threads(1)
    res = []
    for M, ef in grid(args):
        if M != m:
            continue
        idx.set_ef(ef)
        p50, rec = timed_queries(lambda v: idx.knn_query(v, k=K, num_threads=1)[0][0], q, gt)
        res.append({"M": M, "ef": ef, "p50_ms": p50, "recall": rec})
    out["runs"] = res
    out["peak_rss_mb"] = max(peak_build, rss_mb())
    out["rss_before_mb"] = base
    return out


def run_faiss(args, x, q, gt, m, path):
    import faiss

    faiss.omp_set_num_threads(1)
    out = {}
    base = rss_mb()
    idx = faiss.IndexHNSWFlat(args.dims, m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = args.efc
    t = now()
    idx.add(x)
    out["build_s"] = now() - t
    f = path + ".faiss"
    faiss.write_index(idx, f)
    peak_build = rss_mb()
    del idx
    out["open_ms"], idx = opened(lambda: faiss.read_index(f))
    res = []
    for M, ef in grid(args):
        if M != m:
            continue
        idx.hnsw.efSearch = ef
        p50, rec = timed_queries(lambda v: idx.search(v[None, :], K)[1][0], q, gt)
        res.append({"M": M, "ef": ef, "p50_ms": p50, "recall": rec})
    out["runs"] = res
    out["peak_rss_mb"] = max(peak_build, rss_mb())
    out["rss_before_mb"] = base
    return out


def run_usearch(args, x, q, gt, m, path):
    from usearch.index import Index

    out = {}
    base = rss_mb()
    idx = Index(ndim=args.dims, metric="cos", dtype="f32", connectivity=m, expansion_add=args.efc)
    t = now()
    idx.add(np.arange(len(x)), x, threads=1)
    out["build_s"] = now() - t
    f = path + ".usearch"
    idx.save(f)
    peak_build = rss_mb()
    del idx
    out["open_ms"], idx = opened(lambda: Index.restore(f))
    out["open_view_ms"], _ = opened(lambda: Index.restore(f, view=True))
    res = []
    for M, ef in grid(args):
        if M != m:
            continue
        idx.expansion_search = ef
        p50, rec = timed_queries(lambda v: idx.search(v, K, threads=1).keys, q, gt)
        res.append({"M": M, "ef": ef, "p50_ms": p50, "recall": rec})
    out["runs"] = res
    out["peak_rss_mb"] = max(peak_build, rss_mb())
    out["rss_before_mb"] = base
    return out


SYSTEMS = {"trajdb": run_trajdb, "hnswlib": run_hnswlib, "faiss": run_faiss, "usearch": run_usearch}


def proc_status():
    """VmHWM (peak resident), VmRSS, RssAnon (heap and other private memory) and RssFile
    (pages of mapped files) of this process, in MB, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024
    return out


def serve(args):
    """Memory to serve a saved index: a fresh process that imports the library, opens the
    index and answers every query at the largest ef of the grid; no data or ground truth
    in memory. Prints the status before the open and after the queries."""
    q = np.load(os.path.join(args.dir, f"queries-{args.n}.npy"))
    path = os.path.join(args.dir, f"{args.serve}-{args.n}-m{args.m}")
    ef = max(e for M, e in grid(args) if M == args.m)
    if args.serve == "trajdb":
        import trajdb
        before = proc_status()
        db = trajdb.open(path, read_only=True)
        for v in q:
            db.search_approx("goal", v, K, ef=ef)
    elif args.serve == "hnswlib":
        import hnswlib
        before = proc_status()
        idx = hnswlib.Index(space="ip", dim=args.dims)
        idx.load_index(path + ".hnswlib", max_elements=args.n)
        idx.set_num_threads(1)
        idx.set_ef(ef)
        for v in q:
            idx.knn_query(v, k=K, num_threads=1)
    elif args.serve == "faiss":
        import faiss
        faiss.omp_set_num_threads(1)
        before = proc_status()
        idx = faiss.read_index(path + ".faiss")
        idx.hnsw.efSearch = ef
        for v in q:
            idx.search(v[None, :], K)
    elif args.serve == "usearch":
        from usearch.index import Index
        before = proc_status()
        idx = Index.restore(path + ".usearch")
        idx.expansion_search = ef
        for v in q:
            idx.search(v, K, threads=1)
    else:
        raise SystemExit(f"unknown system {args.serve}")
    after = proc_status()
    print(json.dumps({"before": before, "after": after, "ef": ef}))


def opener(name, args):
    """Opens system `name`'s saved index; returns (set_ef(ef), query(v) -> the library's own
    result, ids(result) -> row ids). Only `query` is timed: every system's timed call is its
    library call, and turning its result into row ids for recall is the benchmark's work."""
    path = os.path.join(args.dir, f"{name}-{args.n}-m{args.m}")
    if name == "trajdb":
        import trajdb
        db = trajdb.open(path, read_only=True)
        ef_ = [64]
        return (lambda ef: ef_.__setitem__(0, ef),
                lambda v: db.search_approx("goal", v, K, ef=ef_[0]), trajdb_ids)
    if name == "hnswlib":
        import hnswlib
        idx = hnswlib.Index(space="ip", dim=args.dims)
        idx.load_index(path + ".hnswlib", max_elements=args.n)
        idx.set_num_threads(1)
        return idx.set_ef, lambda v: idx.knn_query(v, k=K, num_threads=1)[0][0], list
    if name == "faiss":
        import faiss
        faiss.omp_set_num_threads(1)
        idx = faiss.read_index(path + ".faiss")
        return (lambda ef: setattr(idx.hnsw, "efSearch", ef),
                lambda v: idx.search(v[None, :], K)[1][0], list)
    if name == "usearch":
        from usearch.index import Index
        idx = Index.restore(path + ".usearch")
        return (lambda ef: setattr(idx, "expansion_search", ef),
                lambda v: idx.search(v, K, threads=1).keys, list)
    raise SystemExit(f"unknown system {name}")


def interleave(args):
    """Every built system in one process, timed on the same queries interleaved: for each
    ef, a warm-up pass, then `--reps` passes in which every query goes to every system, the
    system that goes first rotating from query to query, so load on a shared machine lands
    on all systems alike. Then `--reps` rounds of blocks: each system answers all the queries
    in turn (the order rotating from round to round), so each runs with its own index in
    the cache, as it would serving alone, and load still lands on all alike. Prints per
    system and ef the p50 (p10, p90) of each timing and recall@10."""
    tf = os.path.join(args.dir, f"truth-{args.n}.npy")
    if not os.path.exists(tf):
        x, q = data(args)
        np.save(tf, np.array([sorted(g) for g in truth(x, q)]))
        del x
    q = np.load(os.path.join(args.dir, f"queries-{args.n}.npy"))
    gt = [set(r.tolist()) for r in np.load(tf)]
    names = args.interleave.split(",")
    fns = {n: opener(n, args) for n in names}
    out = {n: [] for n in names}
    for M, ef in grid(args):
        if M != args.m:
            continue
        for n in names:
            fns[n][0](ef)
        for v in q:
            for n in names:
                fns[n][1](v)
        lat = {n: [] for n in names}
        hit = {n: 0 for n in names}
        for rep in range(args.reps):
            for i, v in enumerate(q):
                for j in range(len(names)):
                    n = names[(i + j) % len(names)]
                    t = now()
                    res = fns[n][1](v)
                    lat[n].append(now() - t)
                    if rep == 0:
                        hit[n] += len(gt[i] & set(int(x) for x in fns[n][2](res)))
        blk = {n: [] for n in names}
        for rep in range(args.reps):
            for j in range(len(names)):
                n = names[(rep + j) % len(names)]
                for v in q:
                    t = now()
                    fns[n][1](v)
                    blk[n].append(now() - t)
        for n in names:
            a = np.array(lat[n]) * 1e3
            b = np.array(blk[n]) * 1e3
            out[n].append({"M": M, "ef": ef, "p50_ms": float(np.median(a)),
                           "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90)),
                           "block_p50_ms": float(np.median(b)),
                           "block_p10_ms": float(np.percentile(b, 10)),
                           "block_p90_ms": float(np.percentile(b, 90)),
                           "recall": hit[n] / (K * len(q))})
    print(json.dumps(out))


def at_recall(runs, target=0.95):
    """p50 (ms) at recall@10 `target`, interpolated linearly between the two grid points
    around it (None when the grid does not reach it)."""
    pts = sorted((r["recall"], r["p50_ms"]) for r in runs)
    for (r0, t0), (r1, t1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return t0 if r1 == r0 else t0 + (t1 - t0) * (target - r0) / (r1 - r0)
    return None


def child(args):
    WARMUP[0] = args.warmup
    REPS[0] = args.reps
    x, q = data(args)
    gt = truth(x, q)
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, f"{args.child}-{args.n}-m{args.m}")
    np.save(os.path.join(args.dir, f"queries-{args.n}.npy"), q)
    np.save(os.path.join(args.dir, f"truth-{args.n}.npy"), np.array([sorted(g) for g in gt]))
    out = SYSTEMS[args.child](args, x, q, gt, args.m, path)
    out["data_mb"] = x.nbytes / 2**20
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dims", type=int, default=384)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--noise", type=float, default=0.6)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--grid", default="16:16,16:32,16:64,16:128")
    p.add_argument("--efc", type=int, default=100)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dir", default="target/ann")
    p.add_argument("--systems", default="trajdb,hnswlib,faiss,usearch")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--vectors", help="rows from this .npy (e.g. target/peers-data/minilm-100000.npy) "
                   "instead of the clustered synthetic data")
    p.add_argument("--query-vectors", help="queries from this .npy (with --vectors)")
    p.add_argument("--json")
    p.add_argument("--child")
    p.add_argument("--serve")
    p.add_argument("--interleave")
    p.add_argument("--time-only", action="store_true",
                   help="no builds: time the indexes an earlier run saved in --dir, interleaved")
    p.add_argument("--m", type=int)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.serve:
        return serve(args)
    if args.interleave:
        return interleave(args)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    source = (f"vectors {args.vectors}, queries {args.query_vectors}" if args.vectors else
              f"clustered synthetic: clusters {args.clusters}, noise {args.noise}")
    print(f"n {args.n} x {args.dims}, {args.queries} queries, {source}, efc {args.efc}, "
          f"single thread; load before {' '.join(load)}")
    results = {}
    passed = []
    skip = False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        elif not a.startswith("--json=") and a != "--time-only":
            passed.append(a)
    for name in args.systems.split(","):
        for m in sorted({g[0] for g in grid(args)}):
            if args.time_only:
                # The indexes of an earlier run with the same --n, --dir and grid M.
                results[f"{name}/M{m}"] = {}
                continue
            cmd = [sys.executable, __file__, "--child", name, "--m", str(m)] + passed
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name}: SKIP ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'failed'})")
                continue
            out = json.loads(r.stdout.strip().splitlines()[-1])
            results[f"{name}/M{m}"] = out
            extra = "" if "exact_p50_ms" not in out else (
                f", exact scan p50 {out['exact_p50_ms']:.2f} ms, first (cold) pass of the "
                f"queries at ef 64 {out['cold_pass_ms']:.0f} ms")
            print(f"{name} M{m}: build {out['build_s']:.1f} s, open {out['open_ms']:.2f} ms, peak RSS "
                  f"{out['peak_rss_mb']:.0f} MB (data {out['data_mb']:.0f} MB){extra}")
            for run in out["runs"]:
                line = f"  ef {run['ef']:4d}: p50 {run['p50_ms']:.3f} ms, recall@10 {run['recall']:.4f}"
                if "filtered_recall" in run:
                    line += (f"; success filter (1 in 10): p50 {run['filtered_p50_ms']:.3f} ms, "
                             f"recall@10 {run['filtered_recall']:.4f}")
                print(line)
            out["p50_at_095_ms"] = at_recall(out["runs"])
            r = subprocess.run([sys.executable, __file__, "--serve", name, "--m", str(m)] + passed,
                               capture_output=True, text=True)
            if r.returncode == 0:
                mem = json.loads(r.stdout.strip().splitlines()[-1])
                out["serve_memory_mb"] = mem
                b, a = mem["before"], mem["after"]
                print(f"  serving (fresh process: open, {args.queries} queries at ef {mem['ef']}): peak RSS "
                      f"{a['VmHWM']:.0f} MB ({a['VmHWM'] - b['VmHWM']:+.0f} MB over the imported "
                      f"library), of which at the end anonymous {a['RssAnon'] - b['RssAnon']:+.0f} MB, "
                      f"mapped files {a['RssFile'] - b['RssFile']:+.0f} MB")
            else:
                print(f"  serving memory: not measured ({r.stderr.strip()[-200:]})")
    with open("/proc/loadavg") as f:
        print("load after the builds", " ".join(f.read().split()[:3]))
    # The timing that counts: every built system in one process, interleaved.
    built = [n for n in args.systems.split(",") if any(k.startswith(n + "/") for k in results)]
    for m in sorted({g[0] for g in grid(args)}):
        cmd = [sys.executable, __file__, "--interleave", ",".join(built), "--m", str(m)] + passed
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"interleaved timing: failed ({r.stderr.strip()[-300:]})")
            continue
        inter = json.loads(r.stdout.strip().splitlines()[-1])
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        print(f"\ninterleaved, M {m}, {args.reps} timed pass(es) of {args.queries} queries per ef "
              f"(load after {load}): p50 ms (p10-p90), recall@10")
        print("| ef | " + " | ".join(built) + " |")
        print("|---|" + "---|" * len(built))
        efs = [run["ef"] for run in inter[built[0]]]
        for i, ef in enumerate(efs):
            cells = [f"{inter[n][i]['p50_ms']:.3f} ({inter[n][i]['p10_ms']:.3f}-{inter[n][i]['p90_ms']:.3f}), "
                     f"{inter[n][i]['recall']:.4f}" for n in built]
            print(f"| {ef} | " + " | ".join(cells) + " |")
        print(f"\nblocks, M {m}, {args.reps} round(s): each system answers all {args.queries} "
              f"queries in turn: p50 ms (p10-p90)")
        print("| ef | " + " | ".join(built) + " |")
        print("|---|" + "---|" * len(built))
        for i, ef in enumerate(efs):
            cells = [f"{inter[n][i]['block_p50_ms']:.3f} ({inter[n][i]['block_p10_ms']:.3f}-"
                     f"{inter[n][i]['block_p90_ms']:.3f})" for n in built]
            print(f"| {ef} | " + " | ".join(cells) + " |")
        for n in built:
            results[f"{n}/M{m}"]["interleaved"] = inter[n]
            results[f"{n}/M{m}"]["interleaved_p50_at_095_ms"] = at_recall(inter[n])
            results[f"{n}/M{m}"]["blocks_p50_at_095_ms"] = at_recall(
                [{"recall": r["recall"], "p50_ms": r["block_p50_ms"]} for r in inter[n]])
    # Time per query at recall@10 0.95 (linear between the grid points around it) and the
    # QPS ratio against trajdb (above 1: trajdb answers more queries per second).
    key_t = "interleaved_p50_at_095_ms" if any("interleaved" in v for v in results.values()) else "p50_at_095_ms"
    print(f"\nat recall@10 0.95 ({'interleaved' if key_t.startswith('inter') else 'per-system'} timing):")
    base = {k.split("/")[1]: v.get(key_t) for k, v in results.items() if k.startswith("trajdb/")}
    for key, out in results.items():
        t = out.get(key_t)
        if t is None:
            print(f"{key}: recall@10 0.95 not reached by the grid")
            continue
        tb = base.get(key.split("/")[1])
        ratio = f", trajdb QPS / {key.split('/')[0]} QPS = {t / tb:.2f}" if tb else ""
        print(f"{key}: p50 at recall@10 0.95 {t:.3f} ms{ratio}")
    if any("blocks_p50_at_095_ms" in v for v in results.values()):
        print("\nat recall@10 0.95 (blocks: each system alone in the cache, rounds alternating):")
        base = {k.split("/")[1]: v.get("blocks_p50_at_095_ms") for k, v in results.items()
                if k.startswith("trajdb/")}
        for key, out in results.items():
            t, tb = out.get("blocks_p50_at_095_ms"), base.get(key.split("/")[1])
            if t is None:
                print(f"{key}: recall@10 0.95 not reached by the grid")
                continue
            ratio = f", trajdb QPS / {key.split('/')[0]} QPS = {t / tb:.2f}" if tb else ""
            print(f"{key}: p50 at recall@10 0.95 {t:.3f} ms{ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
