# coordinator/coordinator.cmake: hmoe-coordinator (supervisor + decode loop) and hmoe (client).
if(TARGET hmoe_proto)
  add_executable(hmoe-coordinator ${CMAKE_CURRENT_LIST_DIR}/coordinator.c)
  target_link_libraries(hmoe-coordinator PRIVATE hmoe_proto)
  add_executable(hmoe ${CMAKE_CURRENT_LIST_DIR}/client.c)
  target_link_libraries(hmoe PRIVATE hmoe_proto)
  add_executable(hmoe-bench-ipc ${CMAKE_CURRENT_LIST_DIR}/bench_ipc.c)
  target_link_libraries(hmoe-bench-ipc PRIVATE hmoe_proto)
endif()
