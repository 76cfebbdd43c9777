#!/usr/bin/env bash
# gpu_worker/cuda/device_prof.sh: per-kernel times of one decode step and one 4096-token prefill
# (ncu, one metric: gpu__time_duration) on the 80B shapes with 8 layers (6 linear-attention + 2
# full-attention layers, every expert resident), for deciding what to fuse. Logs go to $OUT.
# Usage (device): . scripts/device-env.sh && gpu_worker/cuda/device_prof.sh
# Summarise locally: python3 gpu_worker/cuda/prof_summary.py OUT/ncu_decode.csv
set -u
OUT=${OUT:-/tmp/hmoe-out}
B=${B:-bprof}
mkdir -p "$OUT"
{ cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$B" -j16 --target hmoe-bench; } >"$OUT/build.log" 2>&1
echo "build rc=$?" | tee -a "$OUT/summary.txt"
m='synth:qwen3-next-80b-a3b?layers=8'
ncu_run() { # out-file, hmoe-bench args...
  local f=$1; shift
  timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    --launch-count 6000 --log-file "$f" "$B/bin/hmoe-bench" -m "$m" -r 1 --vram-budget 0 "$@" \
    >>"$OUT/summary.txt" 2>&1
  echo "ncu $* rc=$? lines=$(wc -l <"$f")" | tee -a "$OUT/summary.txt"
}
ncu_run "$OUT/ncu_decode.csv" -p 0 -n 2 --no-graphs
ncu_run "$OUT/ncu_prefill.csv" -p 4096 -n 0
