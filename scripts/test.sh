#!/usr/bin/env bash
# The test command: installs dependencies, builds (with CUDA when nvcc is present, warnings as
# errors), runs every non-GPU test, then rebuilds without CUDA under AddressSanitizer +
# UndefinedBehaviorSanitizer and runs the unit, proto, ipc and integration tests again there
# (the cluster with real processes, sockets and shared memory included).
# GPU tests (label gpu) run with `ctest -L gpu` on a machine that has one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)
# OpenMP threads that spin while waiting starve the other tests run in parallel by ctest -j.
export OMP_WAIT_POLICY=passive

cmake -S . -B build -G Ninja -DHMOE_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest -LE gpu --output-on-failure -j "$jobs")

cmake -S . -B build-san -G Ninja -DHMOE_CUDA=OFF -DHMOE_WERROR=ON -DHMOE_SANITIZE=address,undefined \
      -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-san -j "$jobs"
(cd build-san && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest -L 'unit|proto|ipc|integration' -LE 'gpu|slow' --output-on-failure -j "$jobs")
