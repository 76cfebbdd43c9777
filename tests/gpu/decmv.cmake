# tests/gpu/decmv.cmake: the decode matvec kernel (dec_mv.cu, every mode and epilogue, plain
# and PDL launches) against a float64 reference (label gpu; exit 77 without a device).
if(HMOE_HAVE_CUDA)
  add_test(NAME test_gpu_decmv COMMAND hmoe-bench-decmv --check)
  set_tests_properties(test_gpu_decmv PROPERTIES LABELS gpu TIMEOUT 120 SKIP_RETURN_CODE 77)
endif()
