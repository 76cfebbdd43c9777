#!/usr/bin/env bash
# deploy/device_cluster.sh: the cluster with the CUDA backend on the GPU machine in one call:
# build with CUDA (protoc-c from the carried debs), the gpu-labelled cluster test
# (tests/gpu/cluster_cuda.cmake), and deploy/bench-cluster.sh on synth:qwen3-next-80b-a3b with a
# 14 GiB VRAM budget and 1 expert worker of 16 threads (512-token prompt, 128 generated). Every
# step logs to $OUT (summary.txt first); a failed step is logged and the next one still runs.
# Designed to finish in under 6 minutes (each step has a timeout).
# Usage (device, run tool with carry [".devcarry"]):
#   . scripts/device-env.sh && deploy/device_cluster.sh
OUT=${OUT:-/tmp/hmoe-out}
mkdir -p "$OUT"
exec {BASH_XTRACEFD}>>"$OUT/trace.log" # the command trace, apart from the logs
set -x
# reuse device_fwd.sh's build dir when the machine still has it (the CUDA objects are built)
B=${B:-bfwd}
BT=${BT:-Release}
S="$OUT/summary.txt"
t_start=$(date +%s)
step() { printf '\n== %s (%s, +%ss)\n' "$1" "$(date -u +%T)" "$(($(date +%s) - t_start))" | tee -a "$S"; }

step "environment"
. scripts/device-env.sh # idempotent: unpacks only debs not unpacked yet (protoc-c)
{
  nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
  free -g
  nproc
  command -v protoc-c && protoc-c --version
  command -v nvcc && nvcc --version | tail -1
} >>"$S" 2>&1
command -v protoc-c >/dev/null || echo "WARNING: no protoc-c on PATH: the cluster will not be built (carry .devcarry with protobuf-c-compiler, libprotoc32, libprotobuf32)" | tee -a "$S"

step "build (CUDA, Release)"
timeout 170 bash -c "cmake -S . -B '$B' -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=$BT &&
  cmake --build '$B' -j16 --target hmoe-coordinator hmoe-gpu-worker hmoe-cpu-worker hmoe \
    test_cluster_cuda" >"$OUT/build.log" 2>&1
echo "build rc=$?" | tee -a "$S"
grep -E "error|hmoe: " "$OUT/build.log" | head -20 | tee -a "$S"

step "ctest -L gpu -R cluster_cuda"
(cd "$B" && timeout 70 ctest -L gpu -R cluster_cuda --timeout 30 --output-on-failure) \
  >"$OUT/test_cluster_cuda.log" 2>&1
echo "test rc=$?" | tee -a "$S"
# a test killed on timeout may leave its coordinator behind: stop those (by pid) before the bench
for p in $(pgrep -f "$B/bin/hmoe-coordinator" || true); do kill -TERM "$p"; done
sleep 1
grep -E "Test +#|tests passed|budget|status:|FAIL|differ" "$OUT/test_cluster_cuda.log" | head -40 | tee -a "$S"

step "bench-cluster synth:qwen3-next-80b-a3b, cuda, 14GiB, 1 expert worker x 16 threads"
# host memory while it runs (the 80B model: G0 gives back its host expert pages after the
# upload; E0 holds the model and its prepared shard)
( while :; do
    printf '%s ' "$(date -u +%T)"
    free -m | awk '/^Mem:/ {printf "used %d MiB, available %d MiB; ", $3, $7}'
    ps -C hmoe-gpu-worker,hmoe-cpu-worker -o comm=,rss= | awk '{printf "%s %.1f GiB; ", $1, $2 / 1048576}'
    echo
    sleep 5
  done ) >"$OUT/memory.log" 2>&1 &
mon=$!
timeout 110 deploy/bench-cluster.sh -m synth:qwen3-next-80b-a3b -w 1 -t 16 -p 512 -n 128 -r 2 \
  --backend cuda --vram-budget 14GiB --ready-timeout 80 --bin-dir "$B/bin" \
  >"$OUT/bench_cluster.md" 2>"$OUT/bench_cluster.log"
echo "bench rc=$?" | tee -a "$S"
kill "$mon" 2>/dev/null
grep -E "ready|resident|released|budget|VRAM|rep [0-9]|error|hint|failed|killed|Killed| E |reports" \
  "$OUT/bench_cluster.log" | head -40 | tee -a "$S"
cat "$OUT/bench_cluster.md" | tee -a "$S"
tail -5 "$OUT/memory.log" | tee -a "$S"

step "done"
ls /dev/shm | grep '^hmoe\.' | tee -a "$S"
echo "total $(($(date +%s) - t_start)) s" | tee -a "$S"
exit 0
