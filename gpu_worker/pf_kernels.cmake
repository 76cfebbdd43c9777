# gpu_worker/pf_kernels.cmake: the prefill kernels (cuda/pf_kernels.cu: parallel conv, split-lane
# gated delta rule, tiled causal attention, expert dequant to fp32/bf16) in hmoe_gpu_forward.
# Included after cuda_forward.cmake (this folder's *.cmake files are globbed in sorted order).
if(HMOE_HAVE_CUDA AND TARGET hmoe_gpu_forward)
  target_sources(hmoe_gpu_forward PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cuda/pf_kernels.cu)
endif()
