# Cluster tests (label integration): the real hmoe-coordinator, hmoe-gpu-worker and
# hmoe-cpu-worker binaries on ipc:// sockets and /dev/shm, against the committed fixtures.
# Greedy tokens must equal the in-process forward pass (what hmoe-eval computes) for 1, 2 and 3
# expert workers and several resident budgets; a worker SIGKILLed mid-generation gives the
# client a clear error, the cluster restarts it and serves the next request; malformed bytes on
# the client socket are rejected; nothing is left in /dev/shm.
include(${CMAKE_CURRENT_LIST_DIR}/../fakes/fakes.cmake)
if(TARGET hmoe_proto AND TARGET hmoe_cpu_backend AND TARGET hmoe_experts)
  set(_m ${HMOE_TEST_DATA}/tiny-bf16)
  set(_n ${HMOE_TEST_DATA}/tiny-nf4)
  add_executable(test_cluster ${CMAKE_CURRENT_LIST_DIR}/cluster_test.c)
  target_include_directories(test_cluster PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(test_cluster PRIVATE hmoe_cpu_backend hmoe_proto m)
  target_compile_definitions(test_cluster PRIVATE HMOE_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  # name | scenario | model | workers | resident bytes | expert kernels of the cpu workers
  # ("ref" is bit-exact with the in-process forward pass; "fast" is exp's SIMD path, within
  # ~1e-6, which still gives the same greedy tokens on these fixtures)
  set(_cases
      "greedy_w1|greedy|${_m}|1|0|ref"
      "greedy_w2|greedy|${_m}|2|0|ref"
      "greedy_w3_resident|greedy|${_m}|3|100000|ref"
      "greedy_w2_all_resident|greedy|${_m}|2|1G|ref"
      "greedy_w0|greedy|${_m}|0|0|ref"
      "greedy_nf4_w2|greedy|${_n}|2|30000|ref"
      "greedy_fast_w2|greedy|${_m}|2|0|fast"
      "greedy_fast_nf4_w3|greedy|${_n}|3|0|fast"
      "kill_expert|kill_expert|${_m}|2|0|fast"
      "kill_gpu|kill_gpu|${_m}|1|0|ref"
      "client_fuzz|fuzz|${_m}|1|0|ref"
      "synthetic_4_nodes|topo|${_m}|4|0|fast"
      "hung_expert|hung_expert|${_m}|1|0|ref"
      "failing_expert|failing_expert|${_m}|2|0|ref")
  foreach(c ${_cases})
    string(REPLACE "|" ";" f "${c}")
    list(GET f 0 name)
    list(GET f 1 scen)
    list(GET f 2 model)
    list(GET f 3 w)
    list(GET f 4 res)
    list(GET f 5 kern)
    add_test(NAME cluster_${name} COMMAND test_cluster ${scen} ${model} ${w} ${res} ${kern})
    set_tests_properties(cluster_${name} PROPERTIES LABELS integration TIMEOUT 60
                         SKIP_RETURN_CODE 77)
  endforeach()
endif()

# The launcher: ready line, client and status through it, clean stop on SIGTERM.
if(TARGET hmoe_proto)
  add_test(NAME cluster_launch
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/cluster_launch.sh ${CMAKE_BINARY_DIR}/bin
                   ${HMOE_TEST_DATA}/tiny-bf16)
  set_tests_properties(cluster_launch PROPERTIES LABELS integration TIMEOUT 60
                       SKIP_RETURN_CODE 77)
endif()

# Text in, text out (hmoe_text): the cluster prints what hmoe-generate prints.
if(TARGET hmoe_proto AND TARGET hmoe_text)
  add_test(NAME cluster_text
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/cluster_text.sh ${CMAKE_BINARY_DIR}/bin
                   ${HMOE_TEST_DATA}/tiny-bf16 ${HMOE_TEST_DATA}/tokenizer/tiny-384/tokenizer.json)
  set_tests_properties(cluster_text PROPERTIES LABELS integration TIMEOUT 60
                       SKIP_RETURN_CODE 77)
endif()

# The expert workers' thread plan (--threads 0 and --reserve-cores) on synthetic topologies.
if(TARGET hmoe_proto) # hmoe-coordinator is declared at the end of configuration
  add_test(NAME coordinator_thread_plan
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/thread_plan.sh ${CMAKE_BINARY_DIR}/bin)
  set_tests_properties(coordinator_thread_plan PROPERTIES LABELS integration TIMEOUT 30)
endif()
