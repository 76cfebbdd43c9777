# tests/gpu/prefill.cmake: the prefill kernels (gpu_worker/cuda/pf_kernels.cu) against float64
# CPU references (label gpu; exit 77 without a device).
if(HMOE_HAVE_CUDA AND TARGET hmoe_gpu_forward)
  hmoe_add_test(NAME test_gpu_prefill SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gpu_prefill.cu
                LIBS hmoe_gpu_forward hmoe_core LABELS gpu TIMEOUT 60)
  target_include_directories(test_gpu_prefill PRIVATE ${CMAKE_SOURCE_DIR}/gpu_worker/cuda)
  set_target_properties(test_gpu_prefill PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
endif()
