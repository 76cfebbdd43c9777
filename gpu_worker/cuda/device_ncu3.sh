#!/usr/bin/env bash
# gpu_worker/cuda/device_ncu3.sh: ncu of the NF4 decode matvec (dec_mv) on one large weight
# [131072, 2048] (hmoe-bench-decmv case 7, DMV_NCU=7): both weight-fetch kernels. Logs in $OUT.
# Usage (device, carry [".devcarry"]): . scripts/device-env.sh && bash gpu_worker/cuda/device_ncu3.sh
set -u
OUT=${OUT:-/tmp/hmoe-out}; mkdir -p "$OUT"; B=${B:-bs3}
{ cmake -S . -B "$B" -G Ninja -DHMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$B" -j16 --target hmoe-bench-decmv; } >"$OUT/build.log" 2>&1
echo "build rc=$?"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
for v in F 2; do
  HMOE_DMV_TMA=$v HMOE_DMV_FAST=$([ $v = F ] && echo 1 || echo 0) DMV_NCU=7 timeout 120 "$NCU" --section SpeedOfLight --section Occupancy \
    --section WarpStateStats --section SchedulerStats --section LaunchStats \
    --section InstructionStats --metrics smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,smsp__average_warps_issue_stalled_imc_miss_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio --section MemoryWorkloadAnalysis --section SourceCounters \
    "$B/bin/hmoe-bench-decmv" --bench >"$OUT/ncu_tma$v.txt" 2>&1
  echo "ncu tma=$v rc=$?"
  grep -E "k_dmv|stalled|Duration|DRAM Through|Memory Through|Executed Ipc|Issue Slots|Registers|Achieved Occ|Theoretical Occ|Block Limit|Warp Cycles Per Issued|Executed Instructions |Stall|No Eligible|Active Warps Per|Eligible Warps|Dynamic Shared|Waves" "$OUT/ncu_tma$v.txt" | head -60
done
