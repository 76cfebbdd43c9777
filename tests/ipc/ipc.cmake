# Shared-memory, doorbell, ZeroMQ and hwloc tests (label ipc): real processes (fork), real
# /dev/shm objects and ipc:// sockets in a mkdtemp directory.
if(TARGET hmoe_proto)
  foreach(t shm doorbell topo zmq)
    hmoe_add_test(NAME test_ipc_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ipc_${t}.c
                  LIBS hmoe_proto LABELS ipc TIMEOUT 20)
  endforeach()
endif()
