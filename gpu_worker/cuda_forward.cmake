# gpu_worker/cuda_forward.cmake: the CUDA forward pass (lib hmoe_gpu_forward: forward_cuda.cu +
# fwd_kernels.cu, cuBLAS for prefill GEMMs), hmoe-eval --backend cuda, and hmoe-bench.
# Built only when the top-level CMake found CUDA (HMOE_HAVE_CUDA).
if(HMOE_HAVE_CUDA)
  add_library(hmoe_gpu_forward STATIC ${CMAKE_CURRENT_LIST_DIR}/cuda/forward_cuda.cu
                                      ${CMAKE_CURRENT_LIST_DIR}/cuda/fwd_kernels.cu
                                      ${CMAKE_CURRENT_LIST_DIR}/cuda/dec_mv.cu)
  target_include_directories(hmoe_gpu_forward PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
  target_link_libraries(hmoe_gpu_forward PUBLIC hmoe_gpu_kernels hmoe_cpu_backend hmoe_core
                        CUDA::cudart CUDA::cublas Threads::Threads)
  set_target_properties(hmoe_gpu_forward PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                        POSITION_INDEPENDENT_CODE ON)
  target_compile_options(hmoe_gpu_forward PRIVATE
                         $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall -lineinfo>)

  target_compile_definitions(hmoe-eval PRIVATE HMOE_EVAL_CUDA=1)
  target_link_libraries(hmoe-eval PRIVATE hmoe_gpu_forward hmoe_experts)

  add_executable(hmoe-bench ${CMAKE_CURRENT_LIST_DIR}/bench_main.c)
  target_link_libraries(hmoe-bench PRIVATE hmoe_gpu_forward hmoe_experts hmoe_core)
endif()

# hmoe-bench-decmv: the decode matvec kernel (dec_mv.cu) checked against a float64 reference and
# timed on the 80B decode shapes (tests/gpu/decmv.cmake runs the check).
if(HMOE_HAVE_CUDA)
  add_executable(hmoe-bench-decmv ${CMAKE_CURRENT_LIST_DIR}/cuda/bench_decmv.cu)
  target_link_libraries(hmoe-bench-decmv PRIVATE hmoe_gpu_forward)
  set_target_properties(hmoe-bench-decmv PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
endif()
