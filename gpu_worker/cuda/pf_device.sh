#!/usr/bin/env bash
# gpu_worker/cuda/pf_device.sh: the prefill kernels (pf_kernels.cu) on the GPU machine in one call:
# build, test_gpu_prefill + test_gpu_forward, hmoe-bench on the 80B synth model (default = bf16
# mode with the tensor-core kernels; then HMOE_PREFILL_DENSE=1, tf32 and fp32 modes),
# compute-sanitizer memcheck (test_gpu_prefill, hmoe-eval on tiny-nf4), the ncu per-kernel profile
# of an 8-layer pp4096, racecheck last. Logs go to $OUT; summary in $OUT/summary.txt.
# Usage (device): . scripts/device-env.sh && gpu_worker/cuda/pf_device.sh
set -u
OUT=${OUT:-/tmp/hmoe-out}
B=${B:-bpf}
S="$OUT/summary.txt"
mkdir -p "$OUT"
say() { echo "$*" | tee -a "$S"; }
bench() { # name, timeout, args...
  local n=$1 t=$2
  shift 2
  timeout "$t" "$B/bin/hmoe-bench" -m synth:qwen3-next-80b-a3b --vram-budget 0 "$@" \
    >"$OUT/bench_$n.md" 2>"$OUT/bench_$n.log"
  say "bench $n rc=$? $(date +%T)"
  grep -E "^\| synth" "$OUT/bench_$n.md" | tee -a "$S"
  grep -iE "warn|fail|error" "$OUT/bench_$n.log" | head -3 | tee -a "$S"
}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv >"$OUT/smi.txt" 2>&1
{ cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$B" -j16 --target hmoe-eval hmoe-bench test_gpu_forward test_gpu_prefill; } \
  >"$OUT/build.log" 2>&1
say "build rc=$? $(date +%T)"
grep -m5 -E "error" "$OUT/build.log" | tee -a "$S"
timeout 90 "$B/bin/test_gpu_prefill" >"$OUT/test_prefill.log" 2>&1
say "test_gpu_prefill rc=$?"
grep -vE "^seed|^device" "$OUT/test_prefill.log" | tee -a "$S"
timeout 100 "$B/bin/test_gpu_forward" >"$OUT/test_forward.log" 2>&1
say "test_gpu_forward rc=$?"
grep -E "rel diff|FAIL|checks" "$OUT/test_forward.log" | tee -a "$S"
bench fast 60 -p 512,4096 -n 64 -r 2
HMOE_PREFILL_DENSE=1 bench dense 40 -p 4096 -n 0 -r 2
bench tf32 40 -p 4096 -n 0 -r 1 --prefill tf32
bench fp32 40 -p 4096 -n 0 -r 1 --prefill fp32
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/bin/test_gpu_prefill" \
  >"$OUT/memcheck_prefill.log" 2>&1
say "memcheck test_gpu_prefill rc=$? $(tail -1 "$OUT/memcheck_prefill.log")"
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/bin/hmoe-eval" --backend cuda \
  --vram-budget 0 --model tests/data/tiny-nf4 --tokens-file tests/data/tiny-nf4/tokens.txt \
  --prefill 4 --logits-out /tmp/mc.f32 >"$OUT/memcheck_eval.log" 2>&1
say "memcheck hmoe-eval rc=$? $(tail -1 "$OUT/memcheck_eval.log")"
timeout 80 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  --launch-count 6000 --log-file "$OUT/ncu_prefill.csv" "$B/bin/hmoe-bench" \
  -m 'synth:qwen3-next-80b-a3b?layers=8' -r 1 --vram-budget 0 -p 4096 -n 0 >"$OUT/ncu.log" 2>&1
say "ncu rc=$? $(date +%T)"
timeout 40 compute-sanitizer --tool racecheck --error-exitcode 9 "$B/bin/test_gpu_prefill" \
  >"$OUT/racecheck_prefill.log" 2>&1
say "racecheck test_gpu_prefill rc=$? $(tail -1 "$OUT/racecheck_prefill.log")"
