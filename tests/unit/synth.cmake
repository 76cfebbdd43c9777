# Synthetic models: presets, determinism, scales, bad specs (tests/unit/test_synth.c).
hmoe_add_test(NAME test_synth SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_synth.c LIBS hmoe_core
              LABELS unit TIMEOUT 20)
