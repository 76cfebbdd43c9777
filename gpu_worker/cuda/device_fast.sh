#!/usr/bin/env bash
# gpu_worker/cuda/device_fast.sh: the fast dense decode kernel (k_dmvf, HMOE_DMV_FAST=1) on the
# GPU machine: hmoe-bench-decmv --check (every check incl. the fast ones), memcheck, --bench, then
# tg128 (a) without and with it, and test_gpu_forward with it. Logs in $OUT. (The runs quoted in
# docs/cuda.md that compare kernel variants used this script as of commit df591eb.)
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && bash gpu_worker/cuda/device_fast.sh
set -u
OUT=${OUT:-/tmp/hmoe-out}; mkdir -p "$OUT"; B=${B:-bs3}
t0=$(date +%s)
{ cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$B" -j16 --target hmoe-bench-decmv hmoe-bench test_gpu_forward; } >"$OUT/build.log" 2>&1
echo "build rc=$? (+$(($(date +%s) - t0))s)"; grep -E "error" "$OUT/build.log" | head
timeout 90 "$B/bin/hmoe-bench-decmv" --check >"$OUT/check.txt" 2>&1; echo "check rc=$?"
grep -E "FAIL|checks" "$OUT/check.txt" | head -10; grep -E "vs bf16" "$OUT/check.txt" | sort -t' ' -k7 | tail -1
timeout 90 compute-sanitizer --tool memcheck "$B/bin/hmoe-bench-decmv" --check >"$OUT/memcheck.txt" 2>&1
echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|checks" "$OUT/memcheck.txt" | tail -2
timeout 60 "$B/bin/hmoe-bench-decmv" --bench 2>&1 | tail -13
m=synth:qwen3-next-80b-a3b
for f in 0 1; do
  HMOE_DMV_FAST=$f timeout 60 "$B/bin/hmoe-bench" -m $m -p 0 -n 128 -r 2 --vram-budget 0 2>&1 | grep -E "tok/s|fail"
done
HMOE_DMV_FAST=1 timeout 120 "$B/bin/test_gpu_forward" >"$OUT/fwd_fast.log" 2>&1; echo "test_gpu_forward (fast) rc=$?"
grep -E "FAIL|checks|synth" "$OUT/fwd_fast.log" | tail -5
echo "total $(($(date +%s) - t0)) s"
