#!/usr/bin/env bash
# tests/integration/cluster_launch.sh BIN_DIR MODEL: deploy/hmoe-launch starts a 2-worker
# cluster, prints the ready line, serves `hmoe` and `hmoe status`, and on SIGTERM stops
# everything: no hmoe process of this run, no socket, no run dir, no /dev/shm object left.
set -uo pipefail
bin="$1" model="$2"
here="$(cd "$(dirname "$0")" && pwd)"
launch="$here/../../deploy/hmoe-launch"
[ -f "$model/config.json" ] || { echo "SKIP: no fixture $model"; exit 77; }
tmp=$(mktemp -d /tmp/hmoe-lt-XXXXXX)
run="$tmp/run"
fail() { echo "FAIL: $*"; cat "$tmp/err" 2>/dev/null | tail -20; kill -TERM "$lp" 2>/dev/null; exit 1; }

HMOE_BIN_DIR="$bin" "$launch" -m "$model" --workers 2 --run-dir "$run" >"$tmp/out" 2>"$tmp/err" &
lp=$!
for i in $(seq 1 300); do
  grep -q '^ready: listening on ipc://' "$tmp/out" && break
  kill -0 "$lp" 2>/dev/null || fail "launcher exited before ready"
  sleep 0.1
done
grep -q '^ready: listening on ipc://' "$tmp/out" || fail "no ready line in 30 s"
[ "$(stat -c %a "$run")" = 700 ] || fail "run dir mode is $(stat -c %a "$run"), expected 700"
coord=$(pgrep -f -- "hmoe-coordinator -m $model --run-dir $run" | head -1)
[ -n "$coord" ] || fail "coordinator not found"
[ "$(ls /dev/shm | grep -c "^hmoe\.$coord-")" = 3 ] || fail "expected 3 shm regions"

toks=$("$bin/hmoe" --run-dir "$run" --tokens "1 2 3 4" -n 6 --ignore-eos 2>"$tmp/stats") || fail "hmoe failed"
[ "$(echo "$toks" | wc -w)" = 6 ] || fail "expected 6 tokens, got '$toks'"
grep -q '^# 6 tokens' "$tmp/stats" || fail "no stats line: $(cat "$tmp/stats")"
"$bin/hmoe" status --run-dir "$run" >"$tmp/status" || fail "hmoe status failed"
grep -q 'E1 ' "$tmp/status" && grep -q 'placement' "$tmp/status" || fail "status: $(cat "$tmp/status")"
workers=$(pgrep -d' ' -f -- "--run-dir $run" || true)

kill -TERM "$lp"
for i in $(seq 1 150); do kill -0 "$lp" 2>/dev/null || break; sleep 0.1; done
kill -0 "$lp" 2>/dev/null && fail "launcher still running 15 s after SIGTERM"
wait "$lp"; rc=$?
[ "$rc" = 0 ] || fail "launcher exit code $rc"
for p in $workers; do kill -0 "$p" 2>/dev/null && fail "process $p survived"; done
[ -z "$(ls /dev/shm | grep "^hmoe\.$coord-")" ] || fail "shm left: $(ls /dev/shm | grep hmoe)"
[ ! -e "$run" ] || fail "run dir left: $(ls -la "$run")"
rm -rf "$tmp"
echo "PASS"
