# gpu_worker/gpu_worker.cmake: hmoe-gpu-worker (cluster process). Needs the control-plane
# libraries (hmoe_proto) and the CPU forward pass (hmoe_cpu_backend); when CUDA was found it also
# links the CUDA forward pass (hmoe_gpu_forward) and defines HMOE_HAVE_CUDA, which enables
# `--backend cuda`. Declared at the end of configuration so the order of the *.cmake files does
# not matter.
function(hmoe_gpu_worker_target)
  if(TARGET hmoe_proto AND TARGET hmoe_cpu_backend)
    add_executable(hmoe-gpu-worker ${CMAKE_SOURCE_DIR}/gpu_worker/gpu_worker.c)
    target_link_libraries(hmoe-gpu-worker PRIVATE hmoe_cpu_backend hmoe_proto)
    if(TARGET hmoe_gpu_forward)
      target_compile_definitions(hmoe-gpu-worker PRIVATE HMOE_HAVE_CUDA=1)
      target_link_libraries(hmoe-gpu-worker PRIVATE hmoe_gpu_forward)
      message(STATUS "hmoe: hmoe-gpu-worker with backends cpu and cuda")
    endif()
  else()
    message(STATUS "hmoe: hmoe-gpu-worker not built (needs hmoe_proto and hmoe_cpu_backend)")
  endif()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL hmoe_gpu_worker_target)
