# GPU kernel tests (label gpu; exit 77 without a device): each kernel against a CPU reference.
if(HMOE_HAVE_CUDA)
  foreach(t matvec norm router gdn attn)
    hmoe_add_test(NAME test_gpu_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gpu_${t}.c
                  LIBS hmoe_gpu_kernels hmoe_core LABELS gpu TIMEOUT 60)
  endforeach()
endif()
