#!/usr/bin/env bash
# gpu_worker/cuda/device_s3final.sh: the session-3 figures of issue 5 in one GPU-machine call:
# build, every gpu-labelled test, hmoe-bench (a) every expert resident pp512/pp4096/tg128 (+ tg128
# with the fast dense kernel), (b) 14 GiB in process, hmoe-bench-decmv --bench, and the cluster (b)
# with 14 expert threads and the doorbell spin at 50 and 1000 us. Logs in $OUT.
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && bash gpu_worker/cuda/device_s3final.sh
set -u
B=${B:-bs3}
. "$(dirname "$0")/device_lib.sh"
dev_build_test
m=synth:qwen3-next-80b-a3b
step "hmoe-bench (a)"
timeout 100 "$B/bin/hmoe-bench" -m $m -p 512,4096 -n 128 -r 3 --vram-budget 0 --max-seconds 8 \
  >"$OUT/bench.md" 2>"$OUT/bench_a.log"; echo "bench (a) rc=$?" | tee -a "$S"
HMOE_DMV_FAST=1 timeout 50 "$B/bin/hmoe-bench" -m $m -p 0 -n 128 -r 2 --vram-budget 0 -o md \
  2>/dev/null | tail -n +3 | sed 's/| yes |/| yes, HMOE_DMV_FAST=1 |/' >>"$OUT/bench.md"
step "hmoe-bench (b)"
timeout 80 "$B/bin/hmoe-bench" -m $m -p 512 -n 128 -r 2 --vram-budget 14GiB -o md \
  2>"$OUT/bench_b.log" | tail -n +3 >>"$OUT/bench.md"; echo "bench (b) rc=$?" | tee -a "$S"
cat "$OUT/bench.md" | tee -a "$S"
step "hmoe-bench-decmv --bench"
timeout 50 "$B/bin/hmoe-bench-decmv" --bench 2>&1 | tail -13 | tee -a "$S"
for spin in 50 1000; do
  step "cluster (b) 14 threads, spin $spin"
  timeout 70 deploy/bench-cluster.sh -m $m -w 1 -t 14 -p 512 -n 128 -r 1 --backend cuda \
    --vram-budget 14GiB --ready-timeout 60 --bin-dir "$B/bin" -- --spin-us $spin \
    >"$OUT/cl_$spin.md" 2>"$OUT/cl_$spin.log"; echo "rc=$?" | tee -a "$S"
  tail -1 "$OUT/cl_$spin.md" | tee -a "$S"
done
echo "total $(($(date +%s) - t0)) s" | tee -a "$S"
