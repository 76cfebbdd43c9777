#!/usr/bin/env bash
# tests/integration/cluster_mem.sh BIN_DIR MODEL WORKERS RESIDENT KERNELS RSS_CHECK(0|1):
# host memory of the expert workers (helper mem). A cluster on MODEL (synth:<preset> or a
# fixture directory) with WORKERS expert workers, a resident budget and the expert kernels:
#   - every expert worker prepares exactly the experts the GPU worker's placement puts on it:
#     its "experts N" line in `hmoe status` equals the placement's "E<i>: N experts", and the
#     placement covers every (layer, expert) once (G0 + workers = layers x experts)
#   - `hmoe status` shows an RSS for every expert worker
#   - with RSS_CHECK=1 (a synth model) each worker generated only its placed experts (the
#     logged MiB generated <= 1.1 x its shard, < the whole model); with fast kernels (anonymous
#     memory, so giving pages back shows in RSS at once) it logged how many bytes of model pages
#     it gave back, and its RSS after preparing is below what it had after opening the model by
#     at least half of those bytes (less the node-local copy): RSS_now + given/2 < RSS_open + shard,
#     and its peak RSS (VmHWM) stayed below RSS_open + 0.75 x shard (pages released while copying;
#     here +8 MiB for a 20.8 MiB shard, +21 MiB without the release)
#   - greedy tokens of the cluster equal hmoe-eval's: argmax of its logits (teacher-forced over
#     prompt + generated tokens) gives every generated token
set -uo pipefail
bin="$1" model="$2" workers="$3" resident="$4" kernels="$5" rss_check="$6"
case "$model" in
synth:*) ;;
*) [ -f "$model/config.json" ] || { echo "SKIP: no fixture $model"; exit 77; } ;;
esac
tmp=$(mktemp -d /tmp/hmoe-mem-XXXXXX)
cp=""
fail() {
  echo "FAIL: $*"
  tail -30 "$tmp/err" 2>/dev/null
  [ -n "$cp" ] && kill -TERM "$cp" 2>/dev/null
  exit 1
}

"$bin/hmoe-coordinator" -m "$model" --run-dir "$tmp/run" --log-level info --workers "$workers" \
  --resident-bytes "$resident" --expert-kernels "$kernels" --spin-us 0 >"$tmp/out" 2>"$tmp/err" &
cp=$!
cpid=$cp
ready=0
for _ in $(seq 1 400); do
  grep -q '^ready: listening on ipc://' "$tmp/out" && { ready=1; break; }
  kill -0 "$cp" 2>/dev/null || break
  sleep 0.1
done
[ "$ready" = 1 ] || fail "cluster not ready"

# ---- placement and counts ------------------------------------------------------------------
"$bin/hmoe" status --run-dir "$tmp/run" >"$tmp/status" || fail "hmoe status failed"
dims=$(sed -n 's/^placement (v[0-9]*, \([0-9]*\) layers x \([0-9]*\) experts):$/\1 \2/p' "$tmp/status")
[ -n "$dims" ] || fail "no placement in: $(cat "$tmp/status")"
total=$(($(echo "$dims" | cut -d' ' -f1) * $(echo "$dims" | cut -d' ' -f2)))
g0=$(sed -n 's/^  G0 (resident[^:]*: \([0-9]*\) experts.*/\1/p' "$tmp/status")
sum=${g0:-0}
for ((i = 0; i < workers; i++)); do
  placed=$(sed -n "s/^  E$i: \([0-9]*\) experts$/\1/p" "$tmp/status")
  line=$(grep -E "^  E$i +pid" "$tmp/status") || fail "no worker line for E$i"
  owned=$(echo "$line" | sed -n 's/.* experts \([0-9]*\) .*/\1/p')
  [ -n "$placed" ] || placed=0
  [ "$owned" = "$placed" ] ||
    fail "E$i prepared $owned experts, the placement puts $placed on it: $(cat "$tmp/status")"
  rss=$(grep -A1 -E "^  E$i +pid" "$tmp/status" | sed -n 's/.*RSS \([0-9.]*\) MiB$/\1/p')
  [ -n "$rss" ] && awk -v r="$rss" 'BEGIN { exit !(r > 0) }' || fail "no RSS shown for E$i"
  echo "E$i: $owned experts (placement: $placed), RSS $rss MiB"
  sum=$((sum + placed))
done
[ "$sum" = "$total" ] || fail "placement covers $sum of $total (layer, expert) pairs"
[ -n "$g0" ] && [ "$g0" -gt 0 ] || fail "G0 has no resident experts (the test needs some)"

# ---- synth: only the placed experts generated; pages given back ----------------------------
if [ "$rss_check" = 1 ]; then
  for ((i = 0; i < workers; i++)); do
    shard=$(grep -E "^  E$i +pid" "$tmp/status" | sed -n 's/.* \([0-9.]*\) MiB  restarts.*/\1/p')
    read -r made arena < <(grep " E$i [0-9]* I .* MiB of .* MiB generated (the kept routed" "$tmp/err" |
      sed -n 's/.* \([0-9.]*\) MiB of \([0-9.]*\) MiB generated.*/\1 \2/p')
    [ -n "$arena" ] || fail "E$i did not generate a subset of the synth model"
    awk -v m="$made" -v a="$arena" -v s="$shard" \
      'BEGIN { exit !(m > 0 && m <= s * 1.1 + 1 && m < a) }' ||
      fail "E$i generated $made MiB of the $arena MiB synth model for a $shard MiB shard"
    echo "E$i: generated $made of $arena MiB (shard $shard MiB)"
    [ "$kernels" = fast ] || continue
    # fast kernels: the prepared copy replaces the generated experts, whose pages go back
    l=$(grep " E$i [0-9]* I host memory:" "$tmp/err") || fail "E$i logged no host memory line"
    read -r given open now peak < <(echo "$l" |
      sed -n 's/.*; \([0-9.]*\) MiB of model pages given back; RSS \([0-9.]*\) MiB after the model was opened, \([0-9.]*\) MiB now, peak \([0-9.]*\) MiB.*/\1 \2 \3 \4/p')
    [ -n "$peak" ] && [ -n "$shard" ] || fail "E$i: cannot read '$l'"
    awk -v g="$given" -v o="$open" -v n="$now" -v s="$shard" \
      'BEGIN { exit !(g > 0 && n + g / 2 < o + s) }' ||
      fail "E$i: RSS $now MiB after giving back $given MiB (RSS $open MiB after open, shard $shard MiB)"
    # released while copying: the two copies never coexist in full
    awk -v o="$open" -v p="$peak" -v s="$shard" 'BEGIN { exit !(p < o + s * 0.75) }' ||
      fail "E$i: peak RSS $peak MiB (RSS $open MiB after open, shard $shard MiB)"
    echo "E$i: gave back $given MiB of model pages; RSS $open MiB after open -> $now MiB, peak $peak MiB (shard $shard MiB)"
  done
fi

# ---- greedy tokens equal hmoe-eval's -------------------------------------------------------
prompt="1 2 3 4 5 6 7 8 9 10 11"
np=$(echo "$prompt" | wc -w)
ngen=8
"$bin/hmoe" --run-dir "$tmp/run" --tokens "$prompt" -n "$ngen" --ignore-eos >"$tmp/gen" 2>"$tmp/c1" ||
  fail "request: $(cat "$tmp/c1")"
gen=$(head -1 "$tmp/gen")
[ "$(echo "$gen" | wc -w)" = "$ngen" ] || fail "expected $ngen tokens, got '$gen'"
kill -TERM "$cp" 2>/dev/null
wait "$cp"
rc=$?
cp=""
[ "$rc" = 0 ] || fail "coordinator exit code $rc"
echo "$prompt $gen" >"$tmp/toks"
"$bin/hmoe-eval" -m "$model" -f "$tmp/toks" --prefill "$np" -o "$tmp/logits" >/dev/null 2>"$tmp/eval" ||
  fail "hmoe-eval: $(tail -3 "$tmp/eval")"
python3 - "$tmp/logits" "$np" $prompt $gen <<'EOF' || fail "cluster tokens differ from hmoe-eval's"
import struct, sys
path, np_, toks = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3:]]
data = open(path, "rb").read()
T = len(toks)
V = len(data) // 4 // T
assert V * 4 * T == len(data), "logits size"
for p in range(np_ - 1, T - 1):
    row = struct.unpack_from("<%df" % V, data, p * V * 4)
    best = max(range(V), key=row.__getitem__)
    if best != toks[p + 1]:
        print("position %d: hmoe-eval argmax %d, cluster %d" % (p + 1, best, toks[p + 1]))
        sys.exit(1)
print("greedy tokens equal hmoe-eval's:", " ".join(map(str, toks[np_:])))
EOF
[ -z "$(ls /dev/shm | grep "^hmoe\.$cpid-" || true)" ] || fail "shm left behind"
rm -rf "$tmp"
echo "PASS"
