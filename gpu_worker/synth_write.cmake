# hmoe-synth-write: writes a synth: model as a Hugging Face + bnb checkpoint (gpu_worker/synth_write.c).
add_executable(hmoe-synth-write ${CMAKE_CURRENT_LIST_DIR}/synth_write.c)
target_link_libraries(hmoe-synth-write PRIVATE hmoe_core)
# hmoe-synth-check: per-layer activation statistics of a (synth) model through the CPU forward.
if(TARGET hmoe_cpu_backend)
  add_executable(hmoe-synth-check ${CMAKE_CURRENT_LIST_DIR}/synth_check.c)
  target_link_libraries(hmoe-synth-check PRIVATE hmoe_cpu_backend hmoe_core m)
endif()
