#!/usr/bin/env bash
# Checks a trajdb Parquet export with the tools users read it with: pyarrow (schema, rows)
# and duckdb (a SQL query over the file gives the counts of `trajdb stats`). Prints SKIP with
# the reason when they cannot be installed. Needs target/debug/trajdb built with
# `--features parquet` (the step before builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/trajdb
if ! python3 -c "import pyarrow, duckdb" 2>/dev/null; then
  if ! timeout 300 python3 -m pip install --quiet pyarrow duckdb >/tmp/trajdb-pip.log 2>&1; then
    echo "SKIP: pyarrow/duckdb could not be installed with pip: $(tail -1 /tmp/trajdb-pip.log)"
    exit 0
  fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/in.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(500):
        steps = [{"observation": f"obs {i}.{k}", "action": f"act {k}"} for k in range(i % 4)]
        f.write(json.dumps({"goal": f"goal {i}", "env": "wordcraft", "steps": steps,
                            "outcome": {"success": [True, False, None][i % 3]}}) + "\n")
PY
"$bin" --quiet import "$work/db" "$work/in.jsonl" --embed goal,observation --dims 32
"$bin" --quiet export "$work/db" --parquet "$work/out.parquet" --with-utility
"$bin" --quiet export "$work/db" --parquet "$work/chat.parquet" --format chat
"$bin" stats "$work/db" --json > "$work/stats.json"
python3 - "$work" <<'PY'
import json, sys
import pyarrow as pa, pyarrow.parquet as pq, duckdb
work = sys.argv[1]
stats = json.load(open(f"{work}/stats.json"))
t = pq.read_table(f"{work}/out.parquet")
assert t.num_rows == stats["trajectories"], (t.num_rows, stats)
assert t.schema.field("key_goal").type == pa.list_(pa.field("item", pa.float32(), nullable=False), 32), t.schema.field("key_goal").type
assert pa.types.is_struct(t.schema.field("steps").type.value_type)
assert b"trajdb_spaces" in pq.read_metadata(f"{work}/out.parquet").metadata
sql = duckdb.sql(f"""
    select count(*), sum(len(steps)), count(*) filter (where success)
    from read_parquet('{work}/out.parquet')""").fetchall()[0]
want = (stats["trajectories"], stats["steps"], stats["successes"])
assert tuple(int(x) for x in sql) == want, (sql, want)
chat = duckdb.sql(f"select count(*), min(len(messages)) from read_parquet('{work}/chat.parquet')").fetchall()[0]
assert chat[0] == sum(1 for _ in range(500) if _ % 4), chat
print(f"parquet: pyarrow reads {t.num_rows} rows, {len(t.schema)} columns; duckdb counts "
      f"{want[0]} trajectories, {want[1]} steps, {want[2]} successes = trajdb stats; "
      f"chat export {chat[0]} conversations")
PY
