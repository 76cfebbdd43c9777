# tests/gpu/forward.cmake: the CUDA forward pass against the fixture references, through
# hmoe-eval --backend cuda (all experts resident, and half of them on the CPU hook) and in
# process (label gpu; exit 77 without a device).
if(HMOE_HAVE_CUDA)
  hmoe_add_test(NAME test_gpu_forward SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gpu_forward.c
                LIBS hmoe_gpu_forward hmoe_core LABELS gpu TIMEOUT 180)
  add_dependencies(test_gpu_forward hmoe-eval)
endif()

# Batched decode of several sequences (hmoe_gfwd_decode_batch) against each sequence decoded
# alone, graphs on and off, the host hook, the error cases (label gpu; exit 77 without a device).
if(HMOE_HAVE_CUDA)
  hmoe_add_test(NAME test_gpu_batch SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gpu_batch.c
                LIBS hmoe_gpu_forward hmoe_core LABELS gpu TIMEOUT 180)
endif()
