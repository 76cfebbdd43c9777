#!/usr/bin/env bash
# gpu_worker/cuda/device_sass.sh: SASS of the decode matvec kernels (dec_mv.cu) and their
# instruction mix, for reading off the GPU machine ($OUT/dec_mv.sass, $OUT/mix.txt).
set -u
OUT=${OUT:-/tmp/hmoe-out}; mkdir -p "$OUT"
CU=/usr/local/cuda/bin
$CU/nvcc -arch=sm_90 -O3 -std=c++17 -cubin \
  -Igpu_worker/cuda $(ls -d */include | sed 's/^/-I/') -o "$OUT/dec_mv.cubin" gpu_worker/cuda/dec_mv.cu 2>&1 | tail -5
$CU/cuobjdump -sass "$OUT/dec_mv.cubin" > "$OUT/dec_mv.sass" 2>&1 || $CU/nvdisasm "$OUT/dec_mv.cubin" > "$OUT/dec_mv.sass"
rm -f "$OUT/dec_mv.cubin"
wc -l "$OUT/dec_mv.sass"
