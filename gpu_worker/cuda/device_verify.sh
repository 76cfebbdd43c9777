# gpu_worker/cuda/device_verify.sh: build, every gpu-labelled test and the 80B tg128 on the GPU machine
# (a quick check after a change; logs to $OUT). Usage: . scripts/device-env.sh && bash gpu_worker/cuda/device_verify.sh
set -u
B=bver
{ cmake -S . -B $B -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release && cmake --build $B -j16 --target hmoe-bench hmoe-bench-decmv hmoe-eval hmoe-coordinator hmoe-gpu-worker hmoe-cpu-worker hmoe test_gpu_matvec test_gpu_norm test_gpu_router test_gpu_gdn test_gpu_attn test_gpu_forward test_gpu_prefill test_cluster_cuda; } > $OUT/build.log 2>&1; echo "build rc=$?"; grep -E "error" $OUT/build.log | head
(cd $B && timeout 200 ctest -L gpu --timeout 150 --output-on-failure) > $OUT/ctest.log 2>&1; echo "ctest rc=$?"; grep -E "tests passed|FAIL|Failed" $OUT/ctest.log
timeout 40 $B/bin/hmoe-bench-decmv --bench 2>&1 | tail -8
timeout 60 $B/bin/hmoe-bench -m synth:qwen3-next-80b-a3b -p 0 -n 128 -r 2 --vram-budget 0 2>&1 | grep -E "tok/s|fail"
