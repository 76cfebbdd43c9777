# gpu_worker/cuda/device_decmv.sh: dec_mv kernel choice (HMOE_DMV_TMA 0/1/2) on the GPU machine:
# check, kernel bench and tg128 of the 80B synth model for each (logs to $OUT).
set -u
OUT=${OUT:-/tmp/o}; B=bdec
{ cmake -S . -B $B -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release && cmake --build $B -j16 --target hmoe-bench-decmv hmoe-bench test_gpu_forward; } > $OUT/build.log 2>&1; echo "build rc=$?"; grep -E "error" $OUT/build.log | head
m=synth:qwen3-next-80b-a3b
for v in 2 0 1; do
  echo "== HMOE_DMV_TMA=$v"
  HMOE_DMV_TMA=$v timeout 60 $B/bin/hmoe-bench-decmv > $OUT/decmv_tma$v.txt 2>&1; echo "decmv rc=$?"; grep -E "checks|FAIL" $OUT/decmv_tma$v.txt; tail -7 $OUT/decmv_tma$v.txt
  HMOE_DMV_TMA=$v timeout 60 $B/bin/hmoe-bench -m $m -p 0 -n 128 -r 3 --vram-budget 0 2>&1 | grep -E "tok/s|fail"
done
timeout 100 $B/bin/test_gpu_forward > $OUT/test_forward.log 2>&1; echo "test_forward rc=$?"; grep -E "FAIL|checks|synth" $OUT/test_forward.log | tail -3
