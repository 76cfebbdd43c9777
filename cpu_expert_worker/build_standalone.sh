#!/bin/sh
# Builds the expert kernels, hmoe-bench-experts, hmoe-isa-probe and the kernel/pool unit tests with
# the C compiler alone (no CMake) into DIR, for a machine where the whole tree does not configure
# (e.g. the GPU machine with a partly-carried toolchain). Extra flags via CFLAGS_EXTRA (e.g. -DEXK_PF_DIST=0).
# Compiles in parallel; stops at the first failed step (set -e on each wait).
#   sh cpu_expert_worker/build_standalone.sh DIR
set -eu
out=${1:-build-experts}
cc=${CC:-cc}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
mkdir -p "$out/obj"
flags="-O2 -g -std=c11 -D_GNU_SOURCE -ffp-contract=off -Wall -Wextra -Wno-unused-parameter ${CFLAGS_EXTRA:-}"
inc="-I$here/include -I$here -I$root/shared/include -I$root/tests"
libs="-lpthread -lm"
if printf '#include <hwloc.h>\n' | $cc -E - >/dev/null 2>&1; then
    flags="$flags -DHMOE_HAVE_HWLOC=1"
    libs="$libs -lhwloc"
fi
objs=""
pids=""
build() { # source, extra flags (compiled in the background; `finish` waits)
    o="$out/obj/$(basename "$1" .c).o"
    $cc $flags $inc $2 -c "$1" -o "$o" &
    pids="$pids $!"
    objs="$objs $o"
}
finish() {
    for p in $pids; do wait "$p"; done
    pids=""
}
case "$(uname -m)" in
x86_64)
    flags="$flags -DHMOE_EXPERTS_X86=1"
    build "$here/arch/x86/kernels_avx2.c" "-mavx2 -mfma -mf16c"
    build "$here/arch/x86/kernels_avx512.c" "-mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c"
    build "$here/arch/x86/kernels_avx512bf16.c" \
        "-mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mavx2 -mfma -mf16c"
    build "$here/arch/x86/kernels_amx.c" \
        "-mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mamx-tile -mamx-bf16 -mavx2 -mfma -mf16c"
    ;;
esac
for f in "$here/experts.c" "$here/experts_ref.c" "$here/experts_synth.c" "$here/kernels_generic.c" \
         "$here/pool.c" "$root/shared/status.c" "$root/shared/log.c" "$root/shared/clock.c"; do
    build "$f" ""
done
finish
rm -f "$out/libhmoe_experts.a"
ar rcs "$out/libhmoe_experts.a" $objs
$cc $flags $inc "$here/bench_experts.c" "$out/libhmoe_experts.a" $libs -o "$out/hmoe-bench-experts" &
pids="$!"
$cc $flags $inc "$here/isa_probe.c" "$root/shared/clock.c" -o "$out/hmoe-isa-probe" &
pids="$pids $!"
for t in test_experts test_experts_pool test_experts_kernels; do
    $cc $flags $inc -DHMOE_TEST_DATA="\"$root/tests/data\"" "$root/tests/unit/$t.c" \
        "$out/libhmoe_experts.a" $libs -o "$out/$t" &
    pids="$pids $!"
done
finish
echo "built $out/hmoe-bench-experts $out/hmoe-isa-probe $out/test_experts $out/test_experts_pool $out/test_experts_kernels"
