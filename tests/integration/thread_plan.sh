#!/usr/bin/env bash
# tests/integration/thread_plan.sh BIN_DIR: the expert workers' thread plan of hmoe-coordinator
# (--print-topology on synthetic topologies): with --backend cuda and --threads 0, E0 leaves 2
# cores of its node to the GPU worker and the coordinator and the doorbells spin 1000 us (else
# 50 us); --reserve-cores, --threads and --spin-us override.
set -u
coord="$1/hmoe-coordinator"
fail=0
expect() { # expect PATTERN ARGS...: the plan printed for ARGS has a line matching PATTERN
  local pat="$1"; shift
  local out
  out=$("$coord" --print-topology "$@" 2>&1) || { echo "FAIL: exit $? for $*"; echo "$out"; fail=1; return; }
  if grep -qE "$pat" <<<"$out"; then echo "ok: $* -> $(grep -E "$pat" <<<"$out")"
  else echo "FAIL: '$pat' not in the plan for $*"; echo "$out"; fail=1; fi
}
one="synthetic:pack:1 numa:1 core:16 pu:2"
two="synthetic:pack:2 numa:1 core:8 pu:1"
expect '^E0: 16 threads on node 0$' --topology "$one" --backend cpu
expect '^E0: 14 threads on node 0 \(2 of its cores' --topology "$one" --backend cuda
expect '^E0: 16 threads on node 0$' --topology "$one" --backend cuda --reserve-cores 0
expect '^E0: 12 threads on node 0 \(4 of its cores' --topology "$one" --backend cpu --reserve-cores 4
expect '^E0: 5 threads on node 0$' --topology "$one" --backend cuda -t 5
expect '^E0: 6 threads on node 0 \(2 of' --topology "$two" --backend cuda
expect '^E1: 8 threads on node 1$' --topology "$two" --backend cuda
expect '^doorbell spin: 1000 us$' --topology "$one" --backend cuda
expect '^doorbell spin: 50 us$' --topology "$one" --backend cuda -t 16
expect '^doorbell spin: 50 us$' --topology "$one" --backend cpu
expect '^doorbell spin: 200 us$' --topology "$one" --backend cuda --spin-us 200
expect '^E0: 1 thread on node 0 \(1 of' --topology "synthetic:pack:1 numa:1 core:2 pu:1" --backend cuda --reserve-cores 3
if "$coord" --print-topology --topology "$one" --reserve-cores -1 >/dev/null 2>&1; then
  echo "FAIL: --reserve-cores -1 accepted"; fail=1
else echo "ok: --reserve-cores -1 refused"; fi
exit $fail
