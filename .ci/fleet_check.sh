#!/usr/bin/env bash
# Runs the two DuckDB queries of docs/fleet.md, as written there, over the Parquet exports of
# a three-database fleet, and compares them with the trajdb CLI on the merged database:
# Q per trajectory with `trajdb stats --utility`, exemplar curation with `trajdb curate`.
# Prints SKIP with the reason when duckdb cannot be installed. Needs target/debug/trajdb
# built with `--features parquet` (the CI step before builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/debug/trajdb
if ! python3 -c "import duckdb" 2>/dev/null; then
  if ! timeout 300 python3 -m pip install --quiet duckdb >/tmp/trajdb-pip-fleet.log 2>&1; then
    echo "SKIP fleet queries: duckdb could not be installed with pip: $(tail -1 /tmp/trajdb-pip-fleet.log)"
    exit 0
  fi
fi
cargo build -q --example fleet
fleet_bin=$PWD/target/debug/examples/fleet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$fleet_bin" make dbs 3 300 400 7 2>/dev/null
srcs=()
for d in dbs/src-*; do
  m=fleet/db-$(basename "$d" | sed 's/src-//' | xargs printf '%02d')
  mkdir -p "$m"
  "$bin" --quiet export "$d" --parquet "$m/trajectories.parquet"
  "$bin" --quiet export "$d" --usage --parquet "$m/"
  srcs+=("$d")
done
# Merge in the sort order of the export directories (db-00, db-01, db-02).
"$bin" --quiet merge merged "${srcs[@]}" >/dev/null
"$bin" --quiet export merged --parquet merged.parquet
"$bin" stats merged --utility --json > utility.jsonl
"$bin" curate merged --json > curate.jsonl
python3 - "$OLDPWD/docs/fleet.md" <<'PY'
import json, re, sys
import duckdb
doc = open(sys.argv[1]).read()
blocks = re.findall(r"```sql\n(.*?)```", doc, re.S)
q_sql = next(b for b in blocks if b.startswith("-- fleet: q"))
cur_sql = next(b for b in blocks if b.startswith("-- fleet: curate"))
con = duckdb.connect()
ids = dict(((o, i), tid) for tid, o, i in con.sql(
    "select id, origin, origin_id from read_parquet('merged.parquet')").fetchall())
# Query 1 against trajdb stats --utility on the merged database.
got = {}
for o, i, retrievals, episodes, labelled, success, q in con.sql(q_sql).fetchall():
    got[ids[(o, i)]] = (retrievals, episodes, q)
want = {}
for line in open("utility.jsonl"):
    u = json.loads(line)
    want[u["id"]] = (u["retrievals"], u["episodes"], u["q"])
assert got == want, (len(got), len(want), [k for k in want if got.get(k) != want[k]][:5])
want_q = want
# Query 2 against trajdb curate on the merged database.
got = [(t, o, i, q) for t, o, i, q in con.sql(cur_sql).fetchall()]
want = [(c["task"], c["origin"], c["origin_id"], c["q"]) for c in map(json.loads, open("curate.jsonl"))]
assert got == want, (got[:3], want[:3])
# How many tasks had several successful trajectories at the best Q (the tie-break mattered).
qs = {ids[(o, i)]: q for o, i, *_, q in con.sql(q_sql).fetchall()}
best = {}
for tid, task, ok in con.sql("select id, task, success from read_parquet('merged.parquet')").fetchall():
    if ok:
        q = qs.get(tid) if qs.get(tid) is not None else -1.0
        best.setdefault(task, []).append(q)
ties = sum(1 for v in best.values() if v.count(max(v)) > 1)
assert ties > 0, "the fleet has no ties: the tie-break is untested"
print(f"fleet queries (docs/fleet.md, duckdb {duckdb.__version__}): Q of {len(want_q)} retrieved "
      f"trajectories = trajdb stats --utility; curation of {len(got)} tasks = trajdb curate "
      f"({ties} tasks decided by the tie-break)")
PY
