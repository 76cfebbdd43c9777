#!/usr/bin/env bash
# gpu_worker/cuda/device_cluster3.sh: the cluster (b) on the 80B synth model with the coordinator's
# defaults (--backend cuda: E0 keeps 2 cores free, doorbell spin 1000 us) and with the previous
# defaults (-t 16 = every core, --spin-us 50) and -t 14 --spin-us 50, 3 requests each, same lease.
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && bash gpu_worker/cuda/device_cluster3.sh
set -u
OUT=${OUT:-/tmp/hmoe-out}; mkdir -p "$OUT"; B=${B:-bs3}
{ cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$B" -j16 --target hmoe-coordinator hmoe-gpu-worker hmoe-cpu-worker hmoe; } >"$OUT/build.log" 2>&1
echo "build rc=$?"
"$B/bin/hmoe-coordinator" --backend cuda --print-topology | tail -2
m=synth:qwen3-next-80b-a3b
run() {
  local tag="$1"; shift
  timeout 75 deploy/bench-cluster.sh -m $m -w 1 -p 512 -n 128 -r 3 --backend cuda --vram-budget 14GiB \
    --ready-timeout 60 --bin-dir "$B/bin" "$@" >"$OUT/cl_$tag.md" 2>"$OUT/cl_$tag.log"
  echo "$tag rc=$?: $(tail -1 "$OUT/cl_$tag.md")"
}
run default
run old -t 16 -- --spin-us 50
run t14s50 -t 14 -- --spin-us 50
