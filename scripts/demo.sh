#!/usr/bin/env bash
# The demo: installs what it needs, builds, starts a cluster (coordinator, GPU worker on the CPU
# backend, two CPU expert workers) on the committed tiny Qwen3-Next model with its byte-level BPE
# tokenizer, streams an answer to a chat prompt, shows `hmoe status`, and stops the cluster.
# The tiny model has random weights (made by scripts/gen_fixtures.py), so the text is gibberish;
# every part of the pipeline is real. Usage: scripts/demo.sh [PROMPT]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="${1:-Tell me about the sea.}"
model=tests/data/tiny-bf16
tokenizer=tests/data/tokenizer/tiny-384/tokenizer.json

scripts/install-deps.sh
cmake -S . -B build -G Ninja >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
export OMP_WAIT_POLICY=passive

run=$(mktemp -u /tmp/hmoe-demo-XXXXXX)
log=$(mktemp /tmp/hmoe-demo-log-XXXXXX)
deploy/hmoe-launch -m "$model" --workers 2 --run-dir "$run" -- --tokenizer "$tokenizer" \
  >"$log" 2>&1 &
launcher=$!
stop() { kill -TERM "$launcher" 2>/dev/null || true; wait "$launcher" 2>/dev/null || true; rm -f "$log"; }
trap stop EXIT
for _ in $(seq 1 300); do
  grep -q '^ready: listening on' "$log" && break
  kill -0 "$launcher" 2>/dev/null || { cat "$log" >&2; echo "demo: the cluster failed to start" >&2; exit 2; }
  sleep 0.1
done
grep '^ready:' "$log"

echo "--- hmoe run -p \"$prompt\" -n 48 --seed 42 (streamed; stats on stderr)"
build/bin/hmoe run --run-dir "$run" -p "$prompt" -n 48 --seed 42 --ignore-eos
echo
echo "--- hmoe status"
build/bin/hmoe status --run-dir "$run"
