# hmoe-synth-write: writes a synth: model as a Hugging Face + bnb checkpoint (gpu_worker/synth_write.c).
add_executable(hmoe-synth-write ${CMAKE_CURRENT_LIST_DIR}/synth_write.c)
target_link_libraries(hmoe-synth-write PRIVATE hmoe_core)
