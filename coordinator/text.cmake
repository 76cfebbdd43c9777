# hmoe_text: tokenizer, streaming UTF-8, chat templates, sampler, generation state (hmoe/text.h),
# plus the tools hmoe-tokenize and hmoe-bench-tokenizer. Needs PCRE2 (8-bit) and utf8proc.
if(NOT PCRE2_FOUND OR NOT UTF8PROC_FOUND)
  message(WARNING "hmoe_text needs libpcre2-dev and libutf8proc-dev: skipped")
  return()
endif()
file(GLOB HMOE_TEXT_SRC CONFIGURE_DEPENDS
     ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer*.c ${CMAKE_CURRENT_SOURCE_DIR}/sampler*.c
     ${CMAKE_CURRENT_SOURCE_DIR}/chat*.c ${CMAKE_CURRENT_SOURCE_DIR}/gen*.c
     ${CMAKE_CURRENT_SOURCE_DIR}/cli_opts.c)
add_library(hmoe_text STATIC ${HMOE_TEXT_SRC})
target_include_directories(hmoe_text PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
target_link_libraries(hmoe_text PUBLIC hmoe_core PRIVATE PkgConfig::PCRE2 PkgConfig::UTF8PROC
                      Threads::Threads m)

add_executable(hmoe-tokenize ${CMAKE_CURRENT_SOURCE_DIR}/tokenize_main.c)
target_link_libraries(hmoe-tokenize PRIVATE hmoe_text)
add_executable(hmoe-bench-tokenizer ${CMAKE_CURRENT_SOURCE_DIR}/bench_tokenizer.c)
target_link_libraries(hmoe-bench-tokenizer PRIVATE hmoe_text)
