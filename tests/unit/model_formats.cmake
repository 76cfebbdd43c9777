# Model formats (shared/: safetensors, config.json, bnb NF4, model assembly) and the CPU matmul.
hmoe_add_test(NAME test_nf4 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_nf4.c
              LIBS hmoe_core LABELS unit TIMEOUT 5)
hmoe_add_test(NAME test_config SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_config.c
              LIBS hmoe_core LABELS unit TIMEOUT 5)
hmoe_add_test(NAME test_model_hostile SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_model_hostile.c
              LIBS hmoe_core LABELS unit TIMEOUT 20)
hmoe_add_test(NAME test_matmul SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_matmul.c
              LIBS hmoe_core LABELS unit TIMEOUT 10)
