#!/usr/bin/env bash
# gpu_worker/cuda/device_run.sh: the CUDA helper's GPU-machine session in one call. Builds with
# CUDA (sm_90), runs `ctest -L gpu`, compute-sanitizer memcheck on one GPU test, hmoe-bench-gpu,
# the full 80B synth generation and the CPU-forward activation check; logs go to $OUT.
# Usage (device): . scripts/device-env.sh && gpu_worker/cuda/device_run.sh [steps...]
# steps: build test memcheck bench synth check (default: all, in that order).
set -u
OUT=${OUT:-/tmp/hmoe-out}
mkdir -p "$OUT"
B=${B:-b}
steps=${*:-build test memcheck bench synth check}
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%T)" | tee -a "$OUT/summary.txt"; }
for s in $steps; do
  case $s in
  build)
    step build
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
    { cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
      cmake --build "$B" -j16 -- -k 0; } >"$OUT/build.log" 2>&1
    echo "build rc=$? (errors: $(grep -c 'error' "$OUT/build.log"))" | tee -a "$OUT/summary.txt"
    grep -E "error" "$OUT/build.log" | head -20 | tee -a "$OUT/summary.txt"
    if [ ! -x "$B/bin/test_gpu_matvec" ] || [ ! -x "$B/bin/hmoe-bench-gpu" ]; then
      # Fallback when the tree does not configure: compile hmoe_core, the kernels, the GPU
      # tests and the bench directly.
      echo "fallback build" | tee -a "$OUT/summary.txt"
      mkdir -p "$B/fb" "$B/bin"
      inc="-Ishared/include -Igpu_worker/include -Itests -I/opt/deps/usr/include/cjson"
      for f in shared/*.c; do gcc -O2 -std=c11 -D_GNU_SOURCE -fopenmp $inc -c "$f" -o "$B/fb/$(basename "$f").o"; done
      for f in gpu_worker/cuda/{context,matvec,norm,router,gdn,attn}.cu; do
        nvcc -O3 -arch=sm_90 -std=c++17 $inc -c "$f" -o "$B/fb/$(basename "$f").o"; done
      ar rcs "$B/fb/libk.a" "$B"/fb/*.o
      nvcc -O3 -arch=sm_90 -std=c++17 $inc gpu_worker/cuda/bench_gpu.cu "$B/fb/libk.a" -lcjson -lgomp -o "$B/bin/hmoe-bench-gpu"
      for t in matvec norm router gdn attn; do
        gcc -O2 -std=c11 -D_GNU_SOURCE -fopenmp $inc tests/gpu/test_gpu_$t.c "$B/fb/libk.a" \
          -L/usr/local/cuda/lib64 -lcudart -lcjson -lstdc++ -lm -o "$B/bin/test_gpu_$t"; done
      gcc -O2 -std=c11 -D_GNU_SOURCE -fopenmp $inc gpu_worker/synth_write.c "$B/fb/libk.a" -lcjson -lm \
        -o "$B/bin/hmoe-synth-write"
    fi >>"$OUT/build.log" 2>&1
    ;;
  test)
    step "ctest -L gpu"
    if [ -f "$B/CTestTestfile.cmake" ]; then
      (cd "$B" && timeout 300 ctest -L gpu --output-on-failure) >"$OUT/ctest_gpu.log" 2>&1
    else
      for t in matvec norm router gdn attn; do timeout 120 "$B/bin/test_gpu_$t"; echo "test_gpu_$t rc=$?"; done \
        >"$OUT/ctest_gpu.log" 2>&1
    fi
    echo "ctest rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "tests passed|Passed|Failed|Not Run|FAIL|rc=|checks" "$OUT/ctest_gpu.log" | tee -a "$OUT/summary.txt"
    ;;
  memcheck)
    step "compute-sanitizer memcheck test_gpu_matvec"
    timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/bin/test_gpu_matvec" \
      >"$OUT/memcheck.log" 2>&1
    echo "memcheck rc=$?" | tee -a "$OUT/summary.txt"
    tail -4 "$OUT/memcheck.log" | tee -a "$OUT/summary.txt"
    step "compute-sanitizer racecheck test_gpu_matvec"
    timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 "$B/bin/test_gpu_matvec" \
      >"$OUT/racecheck.log" 2>&1
    echo "racecheck rc=$?" | tee -a "$OUT/summary.txt"
    tail -3 "$OUT/racecheck.log" | tee -a "$OUT/summary.txt"
    ;;
  bench)
    step hmoe-bench-gpu
    timeout 300 "$B/bin/hmoe-bench-gpu" >"$OUT/bench.log" 2>&1
    echo "bench rc=$?" | tee -a "$OUT/summary.txt"
    sed -n '/summary/,$p' "$OUT/bench.log" | tee -a "$OUT/summary.txt"
    grep -E "^device|^copy" "$OUT/bench.log" | tee -a "$OUT/summary.txt"
    ;;
  synth)
    step "synth:qwen3-next-80b-a3b generation"
    /usr/bin/time -v "$B/bin/hmoe-synth-write" -m synth:qwen3-next-80b-a3b >"$OUT/synth.log" 2>&1
    echo "synth rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "generated|Maximum resident|Elapsed" "$OUT/synth.log" | tee -a "$OUT/summary.txt"
    ;;
  check)
    step "hmoe-synth-check synth:qwen3-next-80b-a3b (CPU forward, 2+1 tokens)"
    timeout 300 "$B/bin/hmoe-synth-check" -m synth:qwen3-next-80b-a3b -n 2 >"$OUT/check.log" 2>&1
    echo "check rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "^call . \(|logits|non-finite" "$OUT/check.log" | tee -a "$OUT/summary.txt"
    awk '/routed_out_rms/ {print "routed_out_rms", $9}' "$OUT/check.log" | sort -g | sed -n '1p;$p' | \
      tee -a "$OUT/summary.txt"
    ;;
  *) echo "unknown step $s" ;;
  esac
done
