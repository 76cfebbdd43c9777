#!/usr/bin/env bash
# gpu_worker/cuda/device_s3.sh: session-3 check on the GPU machine: build, every gpu-labelled test,
# hmoe-bench-decmv --bench (both weight-fetch kernels), tg128 (a), and the cluster (b) with the
# doorbell spin at 50 and 1000 us. Logs in $OUT.
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && bash gpu_worker/cuda/device_s3.sh
set -u
B=${B:-bs3}
. "$(dirname "$0")/device_lib.sh"
dev_build_test
step "hmoe-bench-decmv --bench (default kernels)"
timeout 60 "$B/bin/hmoe-bench-decmv" --bench 2>&1 | tail -12 | tee -a "$S"
step "hmoe-bench-decmv --bench, HMOE_DMV_TMA=0 (register kernel everywhere)"
HMOE_DMV_TMA=0 timeout 60 "$B/bin/hmoe-bench-decmv" --bench 2>&1 | tail -10 | tee -a "$S"
m=synth:qwen3-next-80b-a3b
step "tg128 (a)"
timeout 60 "$B/bin/hmoe-bench" -m $m -p 0 -n 128 -r 2 --vram-budget 0 2>&1 | grep -E "tok/s|fail|\|" | tee -a "$S"
for spin in 50 1000; do
  step "cluster (b) spin $spin"
  timeout 110 deploy/bench-cluster.sh -m $m -w 1 -t 16 -p 512 -n 128 -r 1 --backend cuda \
    --vram-budget 14GiB --ready-timeout 80 --bin-dir "$B/bin" -- --spin-us $spin \
    >"$OUT/bench_cluster_$spin.md" 2>"$OUT/bench_cluster_$spin.log"
  echo "bench-cluster rc=$?" | tee -a "$S"
  cat "$OUT/bench_cluster_$spin.md" | tee -a "$S"
done
echo "total $(($(date +%s) - t0)) s" | tee -a "$S"
