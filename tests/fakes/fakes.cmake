# tests/fakes: stand-ins for cluster processes (hmoe-fake-expert), used by the integration tests
# (included from tests/integration/cluster.cmake; guarded so a second include is harmless).
if(TARGET hmoe_proto AND NOT TARGET hmoe-fake-expert)
  add_executable(hmoe-fake-expert ${CMAKE_CURRENT_LIST_DIR}/fake_expert.c)
  target_link_libraries(hmoe-fake-expert PRIVATE hmoe_proto)
endif()
