#!/usr/bin/env bash
# gpu_worker/cuda/device_batch.sh: batched decode (issue 5, session 4) in one GPU-machine call:
# build the targets it needs, the gpu tests of the forward pass (test_gpu_batch, test_gpu_forward,
# test_gpu_prefill, test_gpu_decmv), hmoe-bench --parallel 1,2,4,8 on the 80B shapes (graphs on
# and off), tg128 of one sequence (the B = 1 step), ncu per-kernel times of that step (8 layers),
# then memcheck of test_gpu_batch. Logs in $OUT.
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && bash gpu_worker/cuda/device_batch.sh
set -u
B=${B:-bb4}
. "$(dirname "$0")/device_lib.sh"
step build
dev_build hmoe-bench hmoe-bench-decmv hmoe-eval test_gpu_batch test_gpu_forward test_gpu_prefill
step "ctest (forward pass)"
(cd "$B" && timeout 300 ctest -R 'test_gpu_(batch|forward|prefill|decmv)$' --timeout 240 \
  --output-on-failure) >"$OUT/ctest_gpu.log" 2>&1
echo "ctest rc=$?" | tee -a "$S"
grep -E "Test +#|tests passed|FAIL|rel diff|hook:|bit-identical" "$OUT/ctest_gpu.log" | head -60 | tee -a "$S"
m=synth:qwen3-next-80b-a3b
step "hmoe-bench --parallel (graphs)"
timeout 150 "$B/bin/hmoe-bench" -m $m -p 32 -n 64 -r 3 --vram-budget 0 --parallel 1,2,4,8 \
  >"$OUT/bench.md" 2>"$OUT/bench_par.log"; echo "bench rc=$?" | tee -a "$S"
step "hmoe-bench --parallel (no graphs)"
timeout 100 "$B/bin/hmoe-bench" -m $m -p 32 -n 64 -r 2 --vram-budget 0 --parallel 1,8 \
  --no-graphs -o md 2>>"$OUT/bench_par.log" | tail -n +3 >>"$OUT/bench.md"
echo "rc=$?" | tee -a "$S"
step "hmoe-bench tg128 (one sequence)"
timeout 80 "$B/bin/hmoe-bench" -m $m -p 512 -n 128 -r 3 --vram-budget 0 -o md \
  2>>"$OUT/bench_par.log" | tail -n +3 >>"$OUT/bench.md"; echo "rc=$?" | tee -a "$S"
cat "$OUT/bench.md" | tee -a "$S"
grep -E "hmoe-bench: B |tok/s|failed|error" "$OUT/bench_par.log" | head -20 | tee -a "$S"
step "ncu: one-sequence decode step, 8 layers"
timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  --launch-count 3000 --log-file "$OUT/ncu_new.csv" "$B/bin/hmoe-bench" -m "$m?layers=8" -r 1 \
  --vram-budget 0 -p 0 -n 2 --no-graphs >/dev/null 2>&1
echo "ncu rc=$?" | tee -a "$S"
python3 gpu_worker/cuda/prof_summary.py "$OUT/ncu_new.csv" >"$OUT/ncu_sum.txt" 2>&1
head -12 "$OUT/ncu_sum.txt" | tee -a "$S"
step "memcheck test_gpu_batch"
(cd "$B" && timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
  bin/test_gpu_batch) >"$OUT/memcheck.log" 2>&1
echo "memcheck rc=$?" | tee -a "$S"
grep -E "ERROR SUMMARY|Invalid|FAIL" "$OUT/memcheck.log" | head -10 | tee -a "$S"
echo "total $(($(date +%s) - t0)) s" | tee -a "$S"
