# tests/integration/eval.cmake: the CPU forward pass and hmoe-eval (synthetic model, fixture
# references in tests/data, self-consistency of prefill / decode / continuation).
hmoe_add_test(NAME test_eval_synth SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_eval_synth.c
              LIBS hmoe_cpu_backend LABELS integration TIMEOUT 60)
hmoe_add_test(NAME test_eval_fixtures SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_eval_fixtures.c
              LIBS hmoe_cpu_backend LABELS integration TIMEOUT 60)
add_dependencies(test_eval_fixtures hmoe-eval)
if(HMOE_HAVE_CUDA)
  target_compile_definitions(test_eval_fixtures PRIVATE HMOE_TEST_HAVE_CUDA=1)
endif()
hmoe_add_test(NAME test_eval_consistency SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_eval_consistency.c
              LIBS hmoe_cpu_backend LABELS integration TIMEOUT 60)
# CTest runs tests side by side on few cores: spinning OpenMP workers would starve each other.
set_tests_properties(test_eval_synth test_eval_fixtures test_eval_consistency PROPERTIES
                     ENVIRONMENT "OMP_WAIT_POLICY=passive")
