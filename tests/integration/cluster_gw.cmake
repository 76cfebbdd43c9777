# Cluster checks of helper gw (label integration): `hmoe status` counters are current right
# after a request, the --backend / --vram-budget options and the refusal of --backend cuda where
# it cannot run, and deploy/bench-cluster.sh on the tiny fixture.
if(TARGET hmoe_proto)
  if(HMOE_HAVE_CUDA)
    set(_gw_cuda 1)
  else()
    set(_gw_cuda 0)
  endif()
  foreach(part stats backend bench)
    add_test(NAME cluster_gw_${part}
             COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/cluster_gw.sh ${CMAKE_BINARY_DIR}/bin
                     ${HMOE_TEST_DATA}/tiny-bf16 ${_gw_cuda} ${part})
    set_tests_properties(cluster_gw_${part} PROPERTIES LABELS integration TIMEOUT 60
                         SKIP_RETURN_CODE 77)
  endforeach()
endif()
