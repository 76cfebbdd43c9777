#!/usr/bin/env bash
# tests/integration/cluster_gw.sh BIN_DIR MODEL CUDA_BUILT(0|1) PART: cluster checks of helper gw.
#   stats   `hmoe status` right after a request shows current expert-worker counters: every
#           worker's hand-offs > 0 and the sum of their pairs equals the GPU worker's offloaded
#           pairs, after one request and again after a second one (no waiting for the 2 s Stats)
#   backend --backend foo / --vram-budget without cuda are usage errors (exit 1); --backend cuda
#           on a build without CUDA, or a machine without a device, stops with exit 1 and a
#           message naming CUDA (skipped when a device is there: the gpu tests cover that);
#           with CUDA built, HMOE_DMV_FAST=yes / HMOE_PREFILL=fp64 stop it with a message naming
#           the variable (before the device is touched, so on any machine)
#   bench   deploy/bench-cluster.sh on the fixture: exit 0 and a table row with both speeds
set -uo pipefail
bin="$1" model="$2" cuda_built="$3" part="$4"
here="$(cd "$(dirname "$0")" && pwd)"
[ -f "$model/config.json" ] || { echo "SKIP: no fixture $model"; exit 77; }
tmp=$(mktemp -d /tmp/hmoe-gw-XXXXXX)
cp=""
fail() {
  echo "FAIL: $*"
  tail -20 "$tmp/err" 2>/dev/null
  [ -n "$cp" ] && kill -TERM "$cp" 2>/dev/null
  exit 1
}

start() { # start ARGS...: coordinator in the background, waits for the ready line (30 s)
  "$bin/hmoe-coordinator" -m "$model" --run-dir "$tmp/run" --log-level info "$@" \
    >"$tmp/out" 2>"$tmp/err" &
  cp=$!
  for _ in $(seq 1 300); do
    grep -q '^ready: listening on ipc://' "$tmp/out" && return 0
    kill -0 "$cp" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

stop() {
  kill -TERM "$cp" 2>/dev/null
  wait "$cp"
  local rc=$?
  cp=""
  [ "$rc" = 0 ] || fail "coordinator exit code $rc"
  [ ! -e "$tmp/run" ] || fail "run dir left"
}

# counters from `hmoe status`: "G <offloaded pairs>" and "E<i> <hand-offs> <pairs>"
counters() {
  "$bin/hmoe" status --run-dir "$tmp/run" >"$tmp/status" || fail "hmoe status failed"
  awk '/^  G0 /{g=1; next} /^  E[0-9]+ /{e=$1; next}
       g && /steps,/ {for (i = 1; i <= NF; i++) if ($i == "offloaded") print "G", $(i - 2); g=0}
       e != "" && /hand-offs,/ {print e, $1, $3; e=""}' "$tmp/status"
}

check_current() { # check_current LABEL: every worker got work; sum of E pairs == G0 offloaded
  local c g sum=0 n=0
  c=$(counters)
  g=$(echo "$c" | awk '$1 == "G" {print $2}')
  while read -r name h p; do
    [ "$h" -gt 0 ] || fail "$1: $name shows $h hand-offs right after the request: $(cat "$tmp/status")"
    sum=$((sum + p))
    n=$((n + 1))
  done < <(echo "$c" | grep '^E')
  [ "$n" = 2 ] || fail "$1: expected 2 expert workers in: $(cat "$tmp/status")"
  [ -n "$g" ] && [ "$g" -gt 0 ] || fail "$1: G0 offloaded nothing: $(cat "$tmp/status")"
  [ "$sum" = "$g" ] || fail "$1: expert workers show $sum pairs, G0 offloaded $g: $(cat "$tmp/status")"
  echo "$1: G0 offloaded $g pairs; workers: $(echo "$c" | grep '^E' | tr '\n' ';')"
}

case "$part" in
stats)
  start --workers 2 --spin-us 0 || fail "cluster not ready"
  "$bin/hmoe" --run-dir "$tmp/run" --tokens "1 2 3 4 5" -n 3 --ignore-eos >/dev/null 2>"$tmp/c1" ||
    fail "request 1: $(cat "$tmp/c1")"
  check_current "after request 1"
  "$bin/hmoe" --run-dir "$tmp/run" --tokens "7 8 9" -n 2 --ignore-eos >/dev/null 2>"$tmp/c2" ||
    fail "request 2: $(cat "$tmp/c2")"
  check_current "after request 2"
  stop
  ;;
backend)
  "$bin/hmoe-coordinator" -m "$model" --backend foo >/dev/null 2>"$tmp/e1"
  [ $? = 1 ] && grep -q "expected cpu or cuda" "$tmp/e1" || fail "--backend foo: $(cat "$tmp/e1")"
  "$bin/hmoe-coordinator" -m "$model" --vram-budget 1G >/dev/null 2>"$tmp/e2"
  [ $? = 1 ] && grep -q "needs --backend cuda" "$tmp/e2" || fail "--vram-budget: $(cat "$tmp/e2")"
  t0=$(date +%s)
  if start --workers 1 --backend cuda --vram-budget 64M; then
    echo "a CUDA device is present: the refusal is not tested here"
    stop
  else
    wait "$cp"
    rc=$?
    cp=""
    [ "$rc" = 1 ] || fail "--backend cuda refused with exit code $rc (want 1)"
    [ $(($(date +%s) - t0)) -lt 20 ] || fail "the refusal took more than 20 s"
    grep -qi "cuda" "$tmp/err" || fail "no message naming CUDA"
    if [ "$cuda_built" = 0 ]; then
      grep -q "not built" "$tmp/err" || fail "no 'not built' message: $(cat "$tmp/err")"
    fi
    grep -m1 -i "backend cuda" "$tmp/err"
    [ -z "$(ls /dev/shm | grep "^hmoe\.$!-" || true)" ] || fail "shm left behind"
  fi
  if [ "$cuda_built" = 1 ]; then
    # a bad math switch in the environment is refused before the device is touched
    for ev in HMOE_DMV_FAST=yes HMOE_PREFILL=fp64; do
      if env "$ev" "$bin/hmoe-coordinator" -m "$model" --run-dir "$tmp/run" --workers 1 \
        --backend cuda --vram-budget 64M >"$tmp/out" 2>"$tmp/err"; then
        fail "$ev: the cluster started"
      fi
      grep -q "${ev%%=*}=${ev#*=}: want" "$tmp/err" || fail "$ev: no message naming it"
      grep -m1 "${ev%%=*}" "$tmp/err"
    done
  fi
  ;;
bench)
  "$here/../../deploy/bench-cluster.sh" -m "$model" -w 1,2 -p 40 -n 6 -r 1 --bin-dir "$bin" \
    >"$tmp/out" 2>"$tmp/err" || fail "bench-cluster.sh failed: $(cat "$tmp/out")"
  cat "$tmp/out"
  for w in 1 2; do
    grep -Eq "^\| $w \| cpu \| [0-9]+\.[0-9]+ \| [0-9]+\.[0-9]+ \|" "$tmp/out" ||
      fail "no row for $w workers"
  done
  grep -q "^| workers | backend | pp40 tok/s | tg6 tok/s |" "$tmp/out" || fail "no table header"
  "$here/../../deploy/bench-cluster.sh" -m "$model" -p 0 >/dev/null 2>"$tmp/e3"
  [ $? = 1 ] || fail "bench-cluster.sh -p 0 is not a usage error"
  ;;
*)
  fail "unknown part '$part'"
  ;;
esac
rm -rf "$tmp"
echo "PASS"
