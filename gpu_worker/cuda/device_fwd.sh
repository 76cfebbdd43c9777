#!/usr/bin/env bash
# gpu_worker/cuda/device_fwd.sh: the CUDA forward pass on the GPU machine in one call: build
# (hmoe-eval, hmoe-bench, test_gpu_forward), the fixture test, compute-sanitizer memcheck of one
# fixture run through hmoe-eval --backend cuda, and hmoe-bench; logs go to $OUT.
# Usage (device): . scripts/device-env.sh && gpu_worker/cuda/device_fwd.sh [steps...]
# steps: build test memcheck quick bench bench2 (default: build test memcheck quick bench;
# bench and bench2 are skipped when quick failed).
# Env: B (build dir, default bfwd), BENCH_ARGS (extra hmoe-bench arguments for `bench`).
set -u
OUT=${OUT:-/tmp/hmoe-out}
mkdir -p "$OUT"
B=${B:-bfwd}
steps=${*:-build test memcheck quick bench}
quick_rc=0
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%T)" | tee -a "$OUT/summary.txt"; }
for s in $steps; do
  case $s in
  build)
    step build
    nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv >"$OUT/nvidia-smi.txt" 2>&1
    { cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
      cmake --build "$B" -j16 --target hmoe-eval hmoe-bench test_gpu_forward; } >"$OUT/build.log" 2>&1
    echo "build rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "error" "$OUT/build.log" | head -20 | tee -a "$OUT/summary.txt"
    ;;
  test)
    step "test_gpu_forward"
    timeout 100 "$B/bin/test_gpu_forward" >"$OUT/test_forward.log" 2>&1
    echo "test rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "^fixture|rel diff|FAIL|checks" "$OUT/test_forward.log" | tee -a "$OUT/summary.txt"
    ;;
  memcheck)
    step "compute-sanitizer memcheck hmoe-eval --backend cuda (tiny-nf4)"
    timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/bin/hmoe-eval" \
      --backend cuda --vram-budget 0 --model tests/data/tiny-nf4 \
      --tokens-file tests/data/tiny-nf4/tokens.txt --prefill 4 --logits-out /tmp/mc.f32 \
      >"$OUT/memcheck.log" 2>&1
    echo "memcheck rc=$?" | tee -a "$OUT/summary.txt"
    tail -3 "$OUT/memcheck.log" | tee -a "$OUT/summary.txt"
    ;;
  quick)
    step "hmoe-bench quick (80B shapes, 4 layers)"
    timeout 60 "$B/bin/hmoe-bench" -m 'synth:qwen3-next-80b-a3b?layers=4' -p 512,4096 -n 32 -r 1 \
      --vram-budget 0 --prefill fp32 ${BENCH_ARGS:-} >"$OUT/bench_quick.md" 2>"$OUT/bench_quick.log"
    quick_rc=$?
    echo "quick rc=$quick_rc" | tee -a "$OUT/summary.txt"
    tail -5 "$OUT/bench_quick.log" | tee -a "$OUT/summary.txt"
    cat "$OUT/bench_quick.md" | tee -a "$OUT/summary.txt"
    ;;
  bench)
    step "hmoe-bench synth:qwen3-next-80b-a3b"
    if [ "$quick_rc" != 0 ]; then echo "skipped (quick failed)" | tee -a "$OUT/summary.txt"; continue; fi
    timeout ${BENCH_TIMEOUT:-240} "$B/bin/hmoe-bench" -m synth:qwen3-next-80b-a3b -p 512,4096 -n 128 -r 3 \
      --vram-budget 0,14GiB --max-seconds 15 ${BENCH_ARGS:-} >"$OUT/bench.md" 2>"$OUT/bench.log"
    echo "bench rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "budget|resident|ready|tok/s|failed" "$OUT/bench.log" | tail -30 | tee -a "$OUT/summary.txt"
    cat "$OUT/bench.md" | tee -a "$OUT/summary.txt"
    ;;
  bench2)
    # the same figures in less device time: (a) unlimited, 3 runs; (b) 14 GiB without pp4096
    step "hmoe-bench synth:qwen3-next-80b-a3b (a) unlimited, (b) 14GiB pp512/tg128"
    if [ "$quick_rc" != 0 ]; then echo "skipped (quick failed)" | tee -a "$OUT/summary.txt"; continue; fi
    timeout 60 "$B/bin/hmoe-bench" -m synth:qwen3-next-80b-a3b -p 512,4096 -n 128 -r 3 \
      --vram-budget 0 >"$OUT/bench_a.md" 2>"$OUT/bench_a.log"
    echo "bench (a) rc=$?" | tee -a "$OUT/summary.txt"
    timeout 50 "$B/bin/hmoe-bench" -m synth:qwen3-next-80b-a3b -p 512 -n 128 -r 2 \
      --vram-budget 14GiB >"$OUT/bench_b.md" 2>"$OUT/bench_b.log"
    echo "bench (b) rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "tok/s|failed|CPU" "$OUT/bench_a.log" "$OUT/bench_b.log" | tee -a "$OUT/summary.txt"
    cat "$OUT/bench_a.md" "$OUT/bench_b.md" | tee -a "$OUT/summary.txt"
    ;;
  *) echo "unknown step $s" | tee -a "$OUT/summary.txt" ;;
  esac
done
