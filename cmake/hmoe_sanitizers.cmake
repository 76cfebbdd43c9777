# -DHMOE_SANITIZE=address,undefined adds the sanitizer to every C target (never with CUDA).
if(HMOE_SANITIZE)
  set(_san -fsanitize=${HMOE_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_san}>")
  add_link_options(-fsanitize=${HMOE_SANITIZE})
endif()
