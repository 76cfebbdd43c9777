# hmoe_experts: the CPU expert FFN (scalar reference, prepared node-local expert sets, generic /
# AVX2 / AVX-512 kernels picked by cpuid, AVX-512 BF16 and AMX by name, pinned thread pool) and the
# hmoe-bench-experts binary.
set(HMOE_EXPERTS_SRC
    ${CMAKE_CURRENT_LIST_DIR}/experts.c
    ${CMAKE_CURRENT_LIST_DIR}/experts_ref.c
    ${CMAKE_CURRENT_LIST_DIR}/experts_synth.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_generic.c
    ${CMAKE_CURRENT_LIST_DIR}/pool.c)
set(_hmoe_x86 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(_hmoe_x86 ON)
  set(_arch ${CMAKE_CURRENT_LIST_DIR}/arch/x86)
  list(APPEND HMOE_EXPERTS_SRC ${_arch}/kernels_avx2.c ${_arch}/kernels_avx512.c
       ${_arch}/kernels_avx512bf16.c ${_arch}/kernels_amx.c)
  # Per-file ISA flags: only these files may use the instructions; cpuid picks them at run time.
  set_source_files_properties(${_arch}/kernels_avx2.c PROPERTIES COMPILE_OPTIONS
                              "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${_arch}/kernels_avx512.c PROPERTIES COMPILE_OPTIONS
                              "-mavx512f;-mavx512bw;-mavx512vl;-mavx2;-mfma;-mf16c")
  set_source_files_properties(${_arch}/kernels_avx512bf16.c PROPERTIES COMPILE_OPTIONS
                              "-mavx512f;-mavx512bw;-mavx512vl;-mavx512bf16;-mavx2;-mfma;-mf16c")
  set_source_files_properties(${_arch}/kernels_amx.c PROPERTIES COMPILE_OPTIONS
    "-mavx512f;-mavx512bw;-mavx512vl;-mavx512bf16;-mamx-tile;-mamx-bf16;-mavx2;-mfma;-mf16c")
endif()

add_library(hmoe_experts STATIC ${HMOE_EXPERTS_SRC})
target_include_directories(hmoe_experts PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include
                           PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(hmoe_experts PUBLIC hmoe_core Threads::Threads m)
# Exact bf16 rounding of the dequantized weights: separately rounded multiplies and adds must not
# be fused into FMAs (ISO C mode implies this for GCC; say it for any compiler and mode).
target_compile_options(hmoe_experts PRIVATE -ffp-contract=off)
if(_hmoe_x86)
  target_compile_definitions(hmoe_experts PRIVATE HMOE_EXPERTS_X86=1)
endif()
if(HWLOC_FOUND)
  target_link_libraries(hmoe_experts PRIVATE PkgConfig::HWLOC)
  target_compile_definitions(hmoe_experts PRIVATE HMOE_HAVE_HWLOC=1)
else()
  message(STATUS "hmoe: hwloc not found, the expert pool will not pin threads")
endif()

add_executable(hmoe-bench-experts ${CMAKE_CURRENT_LIST_DIR}/bench_experts.c)
target_link_libraries(hmoe-bench-experts PRIVATE hmoe_experts)
