#!/usr/bin/env bash
# tests/integration/cluster_text.sh BIN_DIR MODEL TOKENIZER: text in, text out through the
# cluster (tokenizer, chat template, sampler, stop strings in the coordinator; 2 expert workers
# with the bit-exact reference kernels) prints exactly what hmoe-generate prints in one process,
# greedy and with seeded sampling; a text prompt without a tokenizer is a clear error.
set -uo pipefail
bin="$1" model="$2" tok="$3"
[ -f "$model/config.json" ] && [ -f "$tok" ] || { echo "SKIP: fixtures missing"; exit 77; }
[ -x "$bin/hmoe-generate" ] || { echo "SKIP: hmoe-generate not built"; exit 77; }
tmp=$(mktemp -d /tmp/hmoe-tt-XXXXXX)
run="$tmp/run"
cp=""
fail() { echo "FAIL: $*"; tail -20 "$tmp/err"; [ -n "$cp" ] && kill -TERM "$cp"; exit 1; }

start() { # extra coordinator args
  "$bin/hmoe-coordinator" -m "$model" --run-dir "$run" --workers 2 --expert-kernels ref \
      --spin-us 20 "$@" >"$tmp/out" 2>"$tmp/err" &
  cp=$!
  for i in $(seq 1 300); do
    grep -q '^ready:' "$tmp/out" && return 0
    kill -0 "$cp" 2>/dev/null || fail "coordinator exited"
    sleep 0.1
  done
  fail "not ready in 30 s"
}
stop() {
  kill -TERM "$cp"
  for i in $(seq 1 150); do kill -0 "$cp" 2>/dev/null || break; sleep 0.1; done
  wait "$cp" || fail "coordinator exit code $?"
  [ -z "$(ls /dev/shm | grep "^hmoe\.$cp-")" ] || fail "shm left"
  cp=""
}

start --tokenizer "$tok"
n=0
while IFS= read -r args; do
  n=$((n + 1))
  # shellcheck disable=SC2086
  a=$("$bin/hmoe" --run-dir "$run" -p "Hello world" $args 2>"$tmp/stats$n") || fail "hmoe $args: $(cat "$tmp/stats$n")"
  # shellcheck disable=SC2086
  b=$("$bin/hmoe-generate" -m "$model" --tokenizer "$tok" -p "Hello world" $args 2>/dev/null) || fail "hmoe-generate $args"
  [ "$a" = "$b" ] || fail "args '$args': cluster '$a' vs hmoe-generate '$b'"
  grep -q '^# [0-9]* tokens' "$tmp/stats$n" || fail "no stats line for '$args'"
done <<'CASES'
-n 16 --temp 0
-n 16 --temp 0.9 -s 42
-n 20 --temp 0.8 --top-k 5 --top-p 0.9 -s 7 -sys Be-brief
-n 24 --temp 0 --chat-template none --repeat-penalty 1.3
-n 40 --temp 1.0 -s 5 -r e
CASES
# interactive chat: two turns from stdin, the second carries the first as history
printf 'Hello world\nAnd then?\n' | "$bin/hmoe" chat --run-dir "$run" -n 8 --temp 0 \
    >"$tmp/chat.out" 2>"$tmp/chat.err" || fail "hmoe chat: $(cat "$tmp/chat.err")"
[ "$(grep -c '^# 8 tokens' "$tmp/chat.err")" = 2 ] || fail "chat: $(cat "$tmp/chat.err")"
one=$("$bin/hmoe" --run-dir "$run" -p "Hello world" -n 8 --temp 0 2>/dev/null)
[ "$(head -1 "$tmp/chat.out")" = "$one" ] || fail "chat turn 1 '$(head -1 "$tmp/chat.out")' vs '$one'"
p1=$(grep -o 'prompt [0-9]* tokens' "$tmp/chat.err" | sed -n 1p | tr -dc 0-9)
p2=$(grep -o 'prompt [0-9]* tokens' "$tmp/chat.err" | sed -n 2p | tr -dc 0-9)
[ "$p2" -gt $((p1 + 8)) ] || fail "turn 2 prompt ($p2 tokens) does not hold turn 1 ($p1 + 8)"
stop

start # no tokenizer: text prompts are refused with a clear error, token ids still work
"$bin/hmoe" --run-dir "$run" -p "Hello" -n 4 >/dev/null 2>"$tmp/e1" && fail "text accepted without a tokenizer"
grep -q "no tokenizer" "$tmp/e1" || fail "unclear error: $(cat "$tmp/e1")"
[ "$("$bin/hmoe" --run-dir "$run" --tokens "5 6 7" -n 4 --ignore-eos 2>/dev/null | wc -w)" = 4 ] || fail "token ids"
stop
rm -rf "$tmp"
echo PASS
