# Unit tests of hmoe_text: tokenizer vs Hugging Face fixtures, sampler, chat templates, generation
# state, option table, hmoe-tokenize.
if(TARGET hmoe_text)
  hmoe_add_test(NAME test_tokenizer SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer.c
                LIBS hmoe_text PkgConfig::CJSON PkgConfig::UTF8PROC Threads::Threads LABELS unit
                TIMEOUT 10)
  hmoe_add_test(NAME test_sampler SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sampler.c
                LIBS hmoe_text LABELS unit TIMEOUT 10)
  hmoe_add_test(NAME test_text_gen SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_text_gen.c
                LIBS hmoe_text PkgConfig::CJSON LABELS unit TIMEOUT 10)
  add_dependencies(test_text_gen hmoe-tokenize)
endif()
# Text in, text out on the tiny model with the CPU reference forward pass (and hmoe-generate).
if(TARGET hmoe_text AND TARGET hmoe-generate)
  hmoe_add_test(NAME test_text_e2e SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_text_e2e.c
                LIBS hmoe_text hmoe_cpu_backend LABELS unit TIMEOUT 20)
  add_dependencies(test_text_e2e hmoe-generate)
endif()
