# Expert FFN kernels and their thread pool (cpu_expert_worker/experts.cmake). Label tsan: the
# threaded tests meant for a -DHMOE_SANITIZE=thread build (`ctest -L tsan`).
if(TARGET hmoe_experts)
  hmoe_add_test(NAME test_experts SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_experts.c
                LIBS hmoe_experts LABELS unit tsan TIMEOUT 20)
  hmoe_add_test(NAME test_experts_pool SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_experts_pool.c
                LIBS hmoe_experts LABELS unit tsan TIMEOUT 10)
endif()
if(TARGET hmoe_experts AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/../data/tiny-nf4/config.json)
  hmoe_add_test(NAME test_experts_model SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_experts_model.c
                LIBS hmoe_experts LABELS unit TIMEOUT 20)
endif()
