# gpu_worker/cpu_backend.cmake: the portable CPU forward pass (static lib hmoe_cpu_backend) and
# hmoe-eval, which runs a whole sequence through it in one process.
add_library(hmoe_cpu_backend STATIC ${CMAKE_CURRENT_LIST_DIR}/cpu/forward_cpu.c)
target_include_directories(hmoe_cpu_backend PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
target_link_libraries(hmoe_cpu_backend PUBLIC hmoe_core)

add_executable(hmoe-eval ${CMAKE_CURRENT_LIST_DIR}/eval.c)
target_link_libraries(hmoe-eval PRIVATE hmoe_cpu_backend)
