#!/usr/bin/env bash
# gpu_worker/cuda/device_batch_ab.sh: the one-sequence decode step before and after the batched
# decode change, same lease: builds hmoe-bench of this tree and of the commit before it
# (.devcarry/head.tar, made here by `git archive HEAD -o .devcarry/head.tar` before the change),
# tg128 of both on the 80B shapes, and ncu per-kernel times (gpu__time_duration) of two decode
# steps with 8 layers for both; then test_gpu_batch. Logs in $OUT. Summarise: python3 gpu_worker/cuda/prof_summary.py OUT/ncu_*.csv
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && bash gpu_worker/cuda/device_batch_ab.sh
set -u
B=${B:-bb4}
. "$(dirname "$0")/device_lib.sh"
H=/tmp/hmoe-head
step "build (this tree and the previous commit)"
mkdir -p $H && tar -xf .devcarry/head.tar -C $H
{ cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$B" -j10 --target hmoe-bench test_gpu_batch; } >"$OUT/build.log" 2>&1 &
{ cmake -S $H -B $H/b -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build $H/b -j6 --target hmoe-bench; } >"$OUT/build_head.log" 2>&1 &
wait
grep -E "error|FAILED" "$OUT/build.log" "$OUT/build_head.log" | head -5 | tee -a "$S"
step "test_gpu_batch"
(cd "$B" && timeout 120 bin/test_gpu_batch) >"$OUT/test_batch.log" 2>&1
echo "test_gpu_batch rc=$?" | tee -a "$S"
grep -E "rel diff|hook:|FAIL|passed|checks" "$OUT/test_batch.log" | tee -a "$S"
m=synth:qwen3-next-80b-a3b
for v in new head; do
  bin=$B/bin/hmoe-bench
  [ $v = head ] && bin=$H/b/bin/hmoe-bench
  step "tg128 $v"
  timeout 60 $bin -m $m -p 0 -n 128 -r 3 --vram-budget 0 2>/dev/null | tail -1 | tee -a "$S"
  step "ncu $v"
  timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    --launch-count 3000 --log-file "$OUT/ncu_$v.csv" $bin -m "$m?layers=8" -r 1 --vram-budget 0 \
    -p 0 -n 2 --no-graphs >/dev/null 2>&1
  echo "ncu rc=$?" | tee -a "$S"
  python3 gpu_worker/cuda/prof_summary.py "$OUT/ncu_$v.csv" | head -14 | tee -a "$S"
done
echo "total $(($(date +%s) - t0)) s" | tee -a "$S"
