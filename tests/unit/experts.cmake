# Expert FFN kernels and their thread pool (cpu_expert_worker/experts.cmake). Label tsan: the
# threaded tests meant for a -DHMOE_SANITIZE=thread build (`ctest -L tsan`).
if(TARGET hmoe_experts)
  hmoe_add_test(NAME test_experts SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_experts.c
                LIBS hmoe_experts LABELS unit tsan TIMEOUT 40)
  hmoe_add_test(NAME test_experts_pool SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_experts_pool.c
                LIBS hmoe_experts LABELS unit tsan TIMEOUT 10)
  # kernel level: includes the internal experts_impl.h
  hmoe_add_test(NAME test_experts_kernels SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_experts_kernels.c
                LIBS hmoe_experts LABELS unit TIMEOUT 20)
  target_include_directories(test_experts_kernels PRIVATE ${CMAKE_SOURCE_DIR}/cpu_expert_worker)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    target_compile_definitions(test_experts_kernels PRIVATE HMOE_EXPERTS_X86=1)
  endif()
endif()
if(TARGET hmoe_experts AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/../data/tiny-nf4/config.json)
  hmoe_add_test(NAME test_experts_model SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_experts_model.c
                LIBS hmoe_experts LABELS unit TIMEOUT 20)
endif()
