# gpu_worker/cuda/device_dec.sh: the decode fast path (dec_mv) on the GPU machine: build, the kernel check,
# test_gpu_forward, the kernel bench, hmoe-bench pp512/tg128 (a) and tg128 (b), tg128 without PDL and
# with the old kernels. Usage: . scripts/device-env.sh && bash gpu_worker/cuda/device_dec.sh
set -u
OUT=${OUT:-/tmp/o}; B=bdec
{ cmake -S . -B $B -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release && cmake --build $B -j16 --target hmoe-bench-decmv hmoe-bench hmoe-eval test_gpu_forward; } > $OUT/build.log 2>&1; echo "build rc=$?"; grep -E "error" $OUT/build.log | head
timeout 60 $B/bin/hmoe-bench-decmv --check > $OUT/decmv_check.txt 2>&1; echo "decmv check rc=$?"; tail -3 $OUT/decmv_check.txt
timeout 100 $B/bin/test_gpu_forward > $OUT/test_forward.log 2>&1; echo "test_forward rc=$?"; grep -E "^fixture|rel diff|FAIL|checks|synth" $OUT/test_forward.log | tail -30
timeout 90 $B/bin/hmoe-bench-decmv --bench > $OUT/decmv_bench.txt 2>&1; echo "decmv bench rc=$?"; cat $OUT/decmv_bench.txt | tail -12
m=synth:qwen3-next-80b-a3b
timeout 80 $B/bin/hmoe-bench -m $m -p 512 -n 128 -r 3 --vram-budget 0 > $OUT/bench_a.md 2> $OUT/bench_a.log; echo "bench a rc=$?"; cat $OUT/bench_a.md
HMOE_PDL=0 timeout 60 $B/bin/hmoe-bench -m $m -p 0 -n 128 -r 2 --vram-budget 0 2>&1 | grep -E "tok/s|fail" ; echo "(no PDL)"
HMOE_DEC_MV=0 timeout 60 $B/bin/hmoe-bench -m $m -p 0 -n 128 -r 2 --vram-budget 0 2>&1 | grep -E "tok/s|fail"; echo "(old path)"
timeout 70 $B/bin/hmoe-bench -m $m -p 0 -n 128 -r 2 --vram-budget 14GiB > $OUT/bench_b.md 2> $OUT/bench_b.log; echo "bench b rc=$?"; cat $OUT/bench_b.md
