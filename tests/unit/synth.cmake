# Synthetic models: presets, determinism, scales, bad specs (tests/unit/test_synth.c).
hmoe_add_test(NAME test_synth SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_synth.c LIBS hmoe_core
              LABELS unit TIMEOUT 20)
# Round trip through the checkpoint reader (shared/model.c, helper "fmt").
if(EXISTS ${CMAKE_SOURCE_DIR}/shared/model.c)
  hmoe_add_test(NAME test_synth_roundtrip SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_synth_roundtrip.c
                LIBS hmoe_core LABELS unit TIMEOUT 20)
endif()
