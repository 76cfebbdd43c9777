# hmoe_gpu_kernels: the CUDA kernels behind hmoe/gpu.h (gpu_worker/cuda/*.cu), and the
# hmoe-bench-gpu tool. Built only when the top-level CMake found CUDA (HMOE_HAVE_CUDA).
if(HMOE_HAVE_CUDA)
  set(HMOE_GPU_KERNEL_SRC
      ${CMAKE_CURRENT_LIST_DIR}/cuda/context.cu
      ${CMAKE_CURRENT_LIST_DIR}/cuda/matvec.cu
      ${CMAKE_CURRENT_LIST_DIR}/cuda/norm.cu
      ${CMAKE_CURRENT_LIST_DIR}/cuda/router.cu
      ${CMAKE_CURRENT_LIST_DIR}/cuda/gdn.cu
      ${CMAKE_CURRENT_LIST_DIR}/cuda/attn.cu)
  add_library(hmoe_gpu_kernels STATIC ${HMOE_GPU_KERNEL_SRC})
  target_include_directories(hmoe_gpu_kernels PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
  target_link_libraries(hmoe_gpu_kernels PUBLIC hmoe_core CUDA::cudart)
  set_target_properties(hmoe_gpu_kernels PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                        POSITION_INDEPENDENT_CODE ON)
  target_compile_options(hmoe_gpu_kernels PRIVATE
                         $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall -lineinfo -Xptxas=-v>)

  add_executable(hmoe-bench-gpu ${CMAKE_CURRENT_LIST_DIR}/cuda/bench_gpu.cu)
  target_link_libraries(hmoe-bench-gpu PRIVATE hmoe_gpu_kernels hmoe_core CUDA::cudart)
  set_target_properties(hmoe-bench-gpu PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  target_compile_options(hmoe-bench-gpu PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall -lineinfo>)
endif()
