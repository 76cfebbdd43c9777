# cpu_expert_worker/cpu_worker.cmake: hmoe-cpu-worker, the NUMA-bound expert worker of the
# cluster (needs the control-plane libraries).
if(TARGET hmoe_proto)
  add_executable(hmoe-cpu-worker ${CMAKE_CURRENT_LIST_DIR}/cpu_worker.c)
  target_link_libraries(hmoe-cpu-worker PRIVATE hmoe_proto)
endif()
