#!/usr/bin/env bash
# gpu_worker/cuda/gdn_device.sh: the chunked gated delta rule (gdn_chunk.cu) on the GPU machine in
# one call. Steps (arguments; run in this order): build (test_gpu_prefill, hmoe-bench; +
# test_gpu_forward and hmoe-eval with `fwd`), prefill (test_gpu_prefill: float64 checks, chunked
# vs recurrent and the per-layer timings at the 80B shapes), bench (hmoe-bench pp512 / pp4096 on
# the 80B synth model, bf16 mode: default vs HMOE_GDN_CHUNK=0), fp32 (default vs
# HMOE_GDN_CHUNK=0 with --prefill fp32), fwd (test_gpu_forward), memcheck (compute-sanitizer on
# test_gpu_prefill without the timings). Logs go to $OUT; summary in $OUT/summary.txt.
# Usage (device):
#   . scripts/device-env.sh && gpu_worker/cuda/gdn_device.sh build prefill bench fp32 fwd memcheck
set -u
OUT=${OUT:-/tmp/hmoe-out}
B=${B:-bgdn}
S="$OUT/summary.txt"
mkdir -p "$OUT"
say() { echo "$*" | tee -a "$S"; }
has() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
bench() { # name, timeout, args... (environment passed by the caller)
  local n=$1 t=$2
  shift 2
  timeout "$t" "$B/bin/hmoe-bench" -m synth:qwen3-next-80b-a3b --vram-budget 0 "$@" \
    >"$OUT/bench_$n.md" 2>"$OUT/bench_$n.log"
  say "bench $n rc=$? $(date +%T)"
  grep -E "^\| synth" "$OUT/bench_$n.md" | tee -a "$S"
  grep -iE "warn|fail|error" "$OUT/bench_$n.log" | head -3 | tee -a "$S"
}
STEPS=" $* "
say "start $(date +%T) steps:$STEPS"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv >"$OUT/smi.txt" 2>&1
if has build; then
  tg="test_gpu_prefill hmoe-bench"
  has fwd && tg="$tg test_gpu_forward hmoe-eval"
  { cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$B" -j16 --target $tg; } >"$OUT/build.log" 2>&1
  say "build rc=$? $(date +%T)"
  grep -m5 -E "error|warning" "$OUT/build.log" | tee -a "$S"
fi
if has prefill; then
  timeout 100 "$B/bin/test_gpu_prefill" >"$OUT/test_prefill.log" 2>&1
  say "test_gpu_prefill rc=$? $(date +%T)"
  grep -E "^gdn|FAIL|checks" "$OUT/test_prefill.log" | tee -a "$S"
fi
if has bench; then
  bench bf16_chunk 70 -p 512,4096 -n 0 -r 2
  HMOE_GDN_CHUNK=0 bench bf16_rec 70 -p 512,4096 -n 0 -r 2
fi
if has fp32; then
  bench fp32_chunk 70 -p 512,4096 -n 0 -r 2 --prefill fp32
  HMOE_GDN_CHUNK=0 bench fp32_rec 70 -p 512,4096 -n 0 -r 2 --prefill fp32
fi
if has fwd; then
  timeout 80 "$B/bin/test_gpu_forward" >"$OUT/test_forward.log" 2>&1
  say "test_gpu_forward rc=$? $(date +%T)"
  grep -E "rel diff|FAIL|checks" "$OUT/test_forward.log" | tee -a "$S"
fi
if has memcheck; then
  HMOE_TEST_NO_TIMING=1 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$B/bin/test_gpu_prefill" >"$OUT/memcheck_prefill.log" 2>&1
  say "memcheck test_gpu_prefill rc=$? $(tail -1 "$OUT/memcheck_prefill.log")"
fi
say "end $(date +%T)"
