# gpu_worker/gdn_chunk.cmake: the chunked (WY) gated delta rule of the prefill
# (cuda/gdn_chunk.cu, launcher fw_pf_gdn_chunk, chosen by fw_pf_gdn) in hmoe_gpu_forward.
# Included after cuda_forward.cmake (this folder's *.cmake files are globbed in sorted order).
if(HMOE_HAVE_CUDA AND TARGET hmoe_gpu_forward)
  target_sources(hmoe_gpu_forward PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cuda/gdn_chunk.cu)
endif()
