#!/usr/bin/env bash
# `trajdb bootstrap --report`: renders a small run's page, then opens it in headless Chromium
# (Debian's `chromium` package, installed with apt-get when missing) and saves a screenshot.
# Prints SKIP with the reason when Chromium cannot be installed; a report that is not written
# fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/ci-report
rm -rf "$out"
# The debug binary `cargo test` built (a release build would cost minutes of CI).
cargo build -q -p trajdb-cli
target/debug/trajdb --quiet bootstrap --method traj-bootstrap --train 30 --test 20 --seeds 2 \
  --report "$out" >/dev/null
test -s "$out/index.html" && test -s "$out/report.json"
chrome=$(command -v chromium || command -v chromium-browser || true)
why=""
if [ -z "$chrome" ]; then
  if [ "$(id -u)" != 0 ]; then
    why="chromium is not installed and installing it needs root"
  elif ! command -v apt-get >/dev/null 2>&1; then
    why="chromium is not installed and there is no apt-get"
  elif timeout 600 apt-get install -y -q chromium >/dev/null 2>&1 \
    || { timeout 300 apt-get update -q >/dev/null 2>&1 \
         && timeout 600 apt-get install -y -q chromium >/dev/null 2>&1; }; then
    chrome=$(command -v chromium || true)
    [ -n "$chrome" ] || why="apt-get installed chromium but it is not on PATH"
  else
    why="apt-get install chromium failed (offline or no such package)"
  fi
fi
if [ -z "$chrome" ]; then
  echo "SKIP report screenshot: $why"
  exit 0
fi
timeout 120 "$chrome" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=760,1500 --screenshot="$PWD/$out/screenshot.png" \
  "file://$PWD/$out/index.html" >/dev/null 2>&1
test -s "$out/screenshot.png"
echo "report screenshot: $out/screenshot.png ($(stat -c %s "$out/screenshot.png") bytes)"
