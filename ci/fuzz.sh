#!/usr/bin/env bash
# Builds trajdb's fuzz targets and runs each for a fixed short time.
# Usage: ci/fuzz.sh [SECONDS_PER_TARGET]   (default 30; env FUZZ_SECONDS also works)
# Prints one summary line per target: executions and crashes. Exits non-zero on a crash.
# Prints a SKIP line and exits 0 when no nightly toolchain is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
secs="${1:-${FUZZ_SECONDS:-30}}"
targets=(frame_decoder record_decoder log_header open_dir jsonl_import model_ops checkpoint_decoder bounds_decoder graph_decoder)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "SKIP fuzz: no nightly toolchain (cargo-fuzz needs one); install with rustup to run"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked >/dev/null 2>&1 || cargo install cargo-fuzz || {
    echo "SKIP fuzz: cargo-fuzz could not be installed"
    exit 0
  }
fi

cargo +nightly fuzz build || { echo "fuzz: build failed"; exit 1; }

status=0
for t in "${targets[@]}"; do
  log="fuzz/artifacts/$t.log"
  mkdir -p fuzz/artifacts "fuzz/corpus/$t"
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1
  rc=$?
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  [ -z "$execs" ] && execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | grep -cE '^(crash|oom|timeout|leak)-' || true)
  echo "fuzz: $t: ${execs:-0} executions in ${secs}s, exit $rc, ${crashes} crash artifacts"
  if [ "$rc" -ne 0 ]; then
    status=1
    tail -30 "$log"
  fi
done
exit $status
