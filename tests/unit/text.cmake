# Unit tests of hmoe_text (tokenizer vs Hugging Face fixtures, sampler, chat, generation state).
if(TARGET hmoe_text)
  hmoe_add_test(NAME test_tokenizer SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer.c
                LIBS hmoe_text PkgConfig::CJSON LABELS unit TIMEOUT 20)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_sampler.c)
    hmoe_add_test(NAME test_sampler SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sampler.c
                  LIBS hmoe_text PkgConfig::CJSON LABELS unit TIMEOUT 10)
  endif()
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_text_gen.c)
    hmoe_add_test(NAME test_text_gen SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_text_gen.c
                  LIBS hmoe_text PkgConfig::CJSON LABELS unit TIMEOUT 10)
  endif()
endif()
