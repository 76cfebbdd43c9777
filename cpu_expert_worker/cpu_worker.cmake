# cpu_expert_worker/cpu_worker.cmake: hmoe-cpu-worker, the NUMA-bound expert worker of the
# cluster. Needs the control-plane libraries (hmoe_proto) and exp's kernels (hmoe_experts, from
# experts.cmake, which sorts after this file): declared at the end of configuration.
function(hmoe_cpu_worker_target)
  if(TARGET hmoe_proto AND TARGET hmoe_experts)
    add_executable(hmoe-cpu-worker ${CMAKE_SOURCE_DIR}/cpu_expert_worker/cpu_worker.c)
    target_link_libraries(hmoe-cpu-worker PRIVATE hmoe_experts hmoe_proto)
  else()
    message(STATUS "hmoe: hmoe-cpu-worker not built (needs hmoe_proto and hmoe_experts)")
  endif()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL hmoe_cpu_worker_target)
