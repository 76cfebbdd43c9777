# tests/gpu/cluster_cuda.cmake: the cluster with `--backend cuda` (label gpu; exit 77 without a
# device): greedy tokens equal the in-process CUDA forward pass with the same VRAM budget and CPU
# expert kernels (the hmoe-eval --backend cuda path), with about half of the experts on 1 or 2
# expert workers, all resident, and no workers (G0's own CPU); placement and counters checked.
if(HMOE_HAVE_CUDA AND TARGET hmoe_proto AND TARGET hmoe_experts)
  add_executable(test_cluster_cuda ${CMAKE_CURRENT_LIST_DIR}/cluster_cuda_test.c)
  target_include_directories(test_cluster_cuda PRIVATE ${CMAKE_SOURCE_DIR}/tests
                             ${CMAKE_SOURCE_DIR}/tests/integration)
  target_link_libraries(test_cluster_cuda PRIVATE hmoe_gpu_forward hmoe_experts hmoe_proto m)
  target_compile_definitions(test_cluster_cuda PRIVATE HMOE_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  add_dependencies(test_cluster_cuda hmoe-coordinator hmoe-gpu-worker hmoe-cpu-worker)
  # name | model | budget | workers
  set(_cases "nf4_half_w2|${HMOE_TEST_DATA}/tiny-nf4|half|2"
             "bf16_half_w1|${HMOE_TEST_DATA}/tiny-bf16|half|1"
             "bf16_all_w1|${HMOE_TEST_DATA}/tiny-bf16|all|1"
             "nf4_half_w0|${HMOE_TEST_DATA}/tiny-nf4|half|0")
  foreach(c ${_cases})
    string(REPLACE "|" ";" f "${c}")
    list(GET f 0 name)
    list(GET f 1 model)
    list(GET f 2 budget)
    list(GET f 3 w)
    add_test(NAME cluster_cuda_${name} COMMAND test_cluster_cuda ${model} ${budget} ${w})
    set_tests_properties(cluster_cuda_${name} PROPERTIES LABELS gpu TIMEOUT 120
                         SKIP_RETURN_CODE 77)
  endforeach()
endif()
