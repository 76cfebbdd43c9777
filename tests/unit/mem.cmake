# Expert-subset synth models of the expert workers (helper mem, tests/unit/test_synth_subset.c).
hmoe_add_test(NAME test_synth_subset SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_synth_subset.c
              LIBS hmoe_core LABELS unit TIMEOUT 20)
# Prepared expert sets that give back their source pages while loading (release_source).
if(TARGET hmoe_experts)
  hmoe_add_test(NAME test_experts_release SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_experts_release.c
                LIBS hmoe_experts LABELS unit TIMEOUT 20)
endif()
