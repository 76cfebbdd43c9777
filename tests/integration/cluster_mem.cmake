# Host memory of the expert workers (helper mem, label integration): each worker prepares only
# the experts of the GPU worker's placement (counts in `hmoe status`), gives back the model's
# pages it no longer reads (RSS drop, synth models), and the cluster's greedy tokens equal
# hmoe-eval's. Cases: name | model | workers | resident bytes | expert kernels | RSS check.
if(TARGET hmoe_proto)
  set(_mem_cases
      "synth_fast_w2|synth:small|2|4M|fast|1"
      "synth_ref_w2|synth:small|2|4M|ref|1"
      "nf4_fast_w3|${HMOE_TEST_DATA}/tiny-nf4|3|30000|fast|0"
      "bf16_ref_w2|${HMOE_TEST_DATA}/tiny-bf16|2|100000|ref|0")
  foreach(c ${_mem_cases})
    string(REPLACE "|" ";" f "${c}")
    list(GET f 0 name)
    list(GET f 1 model)
    list(GET f 2 w)
    list(GET f 3 res)
    list(GET f 4 kern)
    list(GET f 5 rss)
    add_test(NAME cluster_mem_${name}
             COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/cluster_mem.sh ${CMAKE_BINARY_DIR}/bin
                     ${model} ${w} ${res} ${kern} ${rss})
    set_tests_properties(cluster_mem_${name} PROPERTIES LABELS integration TIMEOUT 60
                         SKIP_RETURN_CODE 77)
  endforeach()
endif()
