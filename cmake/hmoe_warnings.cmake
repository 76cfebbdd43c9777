# Warning flags for C (house style); -Werror under HMOE_WERROR (CI).
set(HMOE_C_WARNINGS -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
    -Wdouble-promotion -Wvla -Wno-unused-parameter)
if(HMOE_WERROR)
  list(APPEND HMOE_C_WARNINGS -Werror)
endif()
add_compile_definitions(_GNU_SOURCE)
# Apply to C sources only; CUDA gets its own flags in gpu_worker/cuda.
add_compile_options("$<$<COMPILE_LANGUAGE:C>:${HMOE_C_WARNINGS}>")
