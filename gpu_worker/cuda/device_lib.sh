# gpu_worker/cuda/device_lib.sh: the preamble the issue-5 device scripts share (sourced, not run):
# $OUT (logs), $B (build dir; set it before sourcing to keep a script's own), $S (summary file),
# `step NAME` (a header with the seconds since the start), `dev_build TARGET...` (configure with
# CUDA, build, log in $OUT/build.log, rc and errors to the summary), `dev_ctest_gpu` (every
# gpu-labelled test, log in $OUT/ctest_gpu.log; stops coordinators a failed test left behind),
# $DEV_TARGETS (everything the figures scripts run) and `dev_build_test` (both steps on those).
OUT=${OUT:-/tmp/hmoe-out}
mkdir -p "$OUT"
B=${B:-bs3}
S="$OUT/summary.txt"
t0=$(date +%s)
DEV_TARGETS="hmoe-bench hmoe-bench-decmv hmoe-eval hmoe-coordinator hmoe-gpu-worker hmoe-cpu-worker
  hmoe test_gpu_matvec test_gpu_norm test_gpu_router test_gpu_gdn test_gpu_attn test_gpu_forward
  test_gpu_prefill test_gpu_batch test_cluster_cuda"

step() { printf '\n== %s (+%ss)\n' "$1" "$(($(date +%s) - t0))" | tee -a "$S"; }

dev_build() {
  { cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$B" -j16 --target "$@"; } >"$OUT/build.log" 2>&1
  echo "build rc=$?" | tee -a "$S"
  grep -E "error|FAILED" "$OUT/build.log" | head -10 | tee -a "$S"
}

dev_ctest_gpu() {
  (cd "$B" && timeout 300 ctest -L gpu --timeout 240 --output-on-failure) >"$OUT/ctest_gpu.log" 2>&1
  echo "ctest rc=$?" | tee -a "$S"
  grep -E "Test +#|tests passed|FAIL" "$OUT/ctest_gpu.log" | tee -a "$S"
  local p
  for p in $(pgrep -f "$B/bin/hmoe-coordinator" || true); do kill -TERM "$p"; done
}

dev_build_test() {
  step build
  # shellcheck disable=SC2086
  dev_build $DEV_TARGETS
  step "ctest -L gpu"
  dev_ctest_gpu
}
