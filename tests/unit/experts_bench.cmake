# hmoe-bench-experts smoke tests (cpu_expert_worker/bench_experts.c): a tiny run must print the
# read-bandwidth statistics and the fractions (against the same run and --ref-read-gbs) as JSON;
# --isa with two kernels gives a point for each; bad values of these options are refused.
if(TARGET hmoe-bench-experts)
  add_test(NAME experts_bench_smoke
           COMMAND hmoe-bench-experts -e 4 -k 2 -T 1,2 --tokens 1,3 -r 3 --stream-mb 64
                   --stream-reps 3 --ref-read-gbs 96.8 -o json)
  # a positive median and max read figure, a positive fraction against the reference
  set_tests_properties(experts_bench_smoke PROPERTIES LABELS unit TIMEOUT 30
    PASS_REGULAR_EXPRESSION
    "\"stream_bytes\":67108864,\"stream_reps\":3,\"ref_read_gbs\":96.80,\"read_gbs\":\\[{\"threads\":1,\"gbs\":[1-9][0-9.]*,\"max_gbs\":[1-9].*\"fraction_ref\":0\\.0*[1-9]")
  # kernels compared in one run (interleaved): a point per kernel
  add_test(NAME experts_bench_isa_list
           COMMAND hmoe-bench-experts -e 2 -k 1 -T 1 --tokens 1 -r 2 --stream-mb 64
                   --stream-reps 1 --isa generic,auto -o json)
  set_tests_properties(experts_bench_isa_list PROPERTIES LABELS unit TIMEOUT 30
    PASS_REGULAR_EXPRESSION "\"isa\":\"generic\",\"sched\".*},{\"threads\":1,\"tokens\":1,\"isa\":")
  foreach(bad "--ref-read-gbs;0" "--ref-read-gbs;x" "--stream-reps;0" "--stream-mb;1000000"
              "--isa;foo" "--isa;avx2,avx2")
    string(REPLACE ";" "_" _n "${bad}")
    string(REPLACE "-" "" _n "${_n}")
    string(REPLACE "," "_" _n "${_n}")
    add_test(NAME experts_bench_bad_${_n} COMMAND hmoe-bench-experts -e 2 -k 1 -T 1 ${bad})
    set_tests_properties(experts_bench_bad_${_n} PROPERTIES LABELS unit TIMEOUT 10
      PASS_REGULAR_EXPRESSION "bad value for|exceeds 90% of MemAvailable")
  endforeach()
endif()
