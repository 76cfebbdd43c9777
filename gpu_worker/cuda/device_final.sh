#!/usr/bin/env bash
# gpu_worker/cuda/device_final.sh: the issue-5 figures in one GPU-machine call: build everything
# with CUDA, every gpu-labelled test (kernels, dec_mv, forward, prefill, cluster with --backend
# cuda), hmoe-bench (a) all experts resident pp512/pp4096/tg128 and (b) 14 GiB pp512/tg128 in
# process, then the cluster with 1 CPU expert worker (deploy/bench-cluster.sh, 14 GiB). Logs in $OUT.
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && gpu_worker/cuda/device_final.sh
set -u
B=${B:-bfin}
. "$(dirname "$0")/device_lib.sh"
dev_build_test
m=synth:qwen3-next-80b-a3b
step "hmoe-bench (a) every expert resident"
timeout 120 "$B/bin/hmoe-bench" -m $m -p 512,4096 -n 128 -r 3 --vram-budget 0 --max-seconds 8 \
  >"$OUT/bench.md" 2>"$OUT/bench_a.log"
echo "bench (a) rc=$?" | tee -a "$S"
step "hmoe-bench (b) 14 GiB, in-process CPU experts"
timeout 90 "$B/bin/hmoe-bench" -m $m -p 512 -n 128 -r 2 --vram-budget 14GiB -o md \
  2>"$OUT/bench_b.log" | tail -n +3 >>"$OUT/bench.md"
echo "bench (b) rc=$?" | tee -a "$S"
cat "$OUT/bench.md" | tee -a "$S"
step "cluster (b): deploy/bench-cluster.sh, cuda, 14 GiB, 1 expert worker x 16 threads"
timeout 100 deploy/bench-cluster.sh -m $m -w 1 -t 16 -p 512 -n 128 -r 1 --backend cuda \
  --vram-budget 14GiB --ready-timeout 80 --bin-dir "$B/bin" >"$OUT/bench_cluster.md" \
  2>"$OUT/bench_cluster.log"
echo "bench-cluster rc=$?" | tee -a "$S"
cat "$OUT/bench_cluster.md" | tee -a "$S"
echo "total $(($(date +%s) - t0)) s" | tee -a "$S"
