#!/usr/bin/env bash
# gpu_worker/cuda/device_s4.sh: the session-4 figures of issue 5 in one GPU-machine call: build,
# every gpu-labelled test (incl. test_gpu_batch and the fast-kernel checks of test_gpu_decmv),
# memcheck of the dec_mv checks, hmoe-bench-decmv --bench (NF4 kernels against copy bandwidth),
# hmoe-bench (a) every expert resident pp512/pp4096/tg128 (+ tg128 with the fast dense kernel),
# (b) 14 GiB in process, batched decode --parallel 1,2,4,8, and ncu per-kernel times of a
# one-sequence decode step (8 layers). Logs in $OUT.
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && bash gpu_worker/cuda/device_s4.sh
set -u
B=${B:-bs4}
. "$(dirname "$0")/device_lib.sh"
dev_build_test
step "memcheck hmoe-bench-decmv --check"
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/bin/hmoe-bench-decmv" \
  --check >"$OUT/memcheck.log" 2>&1
echo "memcheck rc=$?" | tee -a "$S"
grep -E "ERROR SUMMARY|checks" "$OUT/memcheck.log" | tail -2 | tee -a "$S"
step "hmoe-bench-decmv --bench"
timeout 60 "$B/bin/hmoe-bench-decmv" --bench 2>&1 | grep -E "copy|^\|" | tee -a "$S"
m=synth:qwen3-next-80b-a3b
step "hmoe-bench (a)"
timeout 100 "$B/bin/hmoe-bench" -m $m -p 512,4096 -n 128 -r 3 --vram-budget 0 --max-seconds 8 \
  >"$OUT/bench.md" 2>"$OUT/bench.log"; echo "bench (a) rc=$?" | tee -a "$S"
timeout 50 "$B/bin/hmoe-bench" -m $m -p 0 -n 128 -r 3 --vram-budget 0 --decode fast -o md \
  2>>"$OUT/bench.log" | tail -n +3 >>"$OUT/bench.md"
step "hmoe-bench (b)"
timeout 80 "$B/bin/hmoe-bench" -m $m -p 512 -n 128 -r 2 --vram-budget 14GiB -o md \
  2>>"$OUT/bench.log" | tail -n +3 >>"$OUT/bench.md"; echo "bench (b) rc=$?" | tee -a "$S"
step "hmoe-bench --parallel"
timeout 120 "$B/bin/hmoe-bench" -m $m -p 32 -n 64 -r 3 --vram-budget 0 --parallel 1,2,4,8 -o md \
  2>>"$OUT/bench.log" | tail -n +3 >>"$OUT/bench.md"; echo "parallel rc=$?" | tee -a "$S"
cat "$OUT/bench.md" | tee -a "$S"
step "ncu: one-sequence decode step, 8 layers"
timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  --launch-count 3000 --log-file "$OUT/ncu.csv" "$B/bin/hmoe-bench" -m "$m?layers=8" -r 1 \
  --vram-budget 0 -p 0 -n 2 --no-graphs >/dev/null 2>&1
echo "ncu rc=$?" | tee -a "$S"
python3 gpu_worker/cuda/prof_summary.py "$OUT/ncu.csv" 2>&1 | head -14 | tee -a "$S"
echo "total $(($(date +%s) - t0)) s" | tee -a "$S"
