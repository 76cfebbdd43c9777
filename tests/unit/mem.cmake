# Expert-subset synth models of the expert workers (helper mem, tests/unit/test_synth_subset.c).
hmoe_add_test(NAME test_synth_subset SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_synth_subset.c
              LIBS hmoe_core LABELS unit TIMEOUT 20)
