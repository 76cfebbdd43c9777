# Control-plane codec tests (label proto): round trip of every body, and a fixed-seed fuzz of
# malformed, truncated and random bytes (also run under ASan/UBSan in CI).
if(TARGET hmoe_proto)
  hmoe_add_test(NAME test_proto_roundtrip SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_proto_roundtrip.c
                LIBS hmoe_proto LABELS proto TIMEOUT 10)
  hmoe_add_test(NAME test_proto_fuzz SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_proto_fuzz.c
                LIBS hmoe_proto LABELS proto TIMEOUT 30)
endif()
