# hmoe_text: tokenizer, streaming UTF-8, chat templates, sampler, generation state (hmoe/text.h),
# plus the tools hmoe-tokenize, hmoe-bench-tokenizer and hmoe-generate. Needs PCRE2 (8-bit) and utf8proc.
if(NOT PCRE2_FOUND OR NOT UTF8PROC_FOUND)
  message(WARNING "hmoe_text needs libpcre2-dev and libutf8proc-dev: skipped")
  return()
endif()
set(_d ${CMAKE_CURRENT_SOURCE_DIR})
add_library(hmoe_text STATIC ${_d}/tokenizer.c ${_d}/tokenizer_utf8.c ${_d}/chat.c
            ${_d}/sampler.c ${_d}/gen.c ${_d}/gen_request.c ${_d}/cli_opts.c)
target_include_directories(hmoe_text PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
target_link_libraries(hmoe_text PUBLIC hmoe_core PRIVATE PkgConfig::PCRE2 PkgConfig::UTF8PROC
                      Threads::Threads m)

add_executable(hmoe-tokenize ${CMAKE_CURRENT_SOURCE_DIR}/tokenize_main.c)
target_link_libraries(hmoe-tokenize PRIVATE hmoe_text)
add_executable(hmoe-bench-tokenizer ${CMAKE_CURRENT_SOURCE_DIR}/bench_tokenizer.c)
target_link_libraries(hmoe-bench-tokenizer PRIVATE hmoe_text)

# hmoe-generate: text in, text out in one process on the CPU reference forward pass.
if(TARGET hmoe_cpu_backend)
  add_executable(hmoe-generate ${CMAKE_CURRENT_SOURCE_DIR}/gen_main.c)
  target_link_libraries(hmoe-generate PRIVATE hmoe_text hmoe_cpu_backend)
endif()
