#!/usr/bin/env bash
# deploy/bench-cluster.sh: prefill and decode speed of a whole cluster (coordinator + GPU worker +
# N CPU expert workers, started through deploy/hmoe-launch) as a client sees it. For each worker
# count it starts a cluster, sends one warm-up request, then R requests of a P-token prompt
# (fixed pseudo-random token ids) with N generated tokens (--ignore-eos --temp 0), and reports
# prefill tok/s (prompt tokens / prompt time) and decode tok/s from the client's stats line.
# Exit codes: 0 ok, 1 usage, 2 a cluster or request failed.
set -uo pipefail

usage() {
  cat <<'USAGE'
usage: bench-cluster.sh [options] [-- extra hmoe-coordinator options]

  -m, --model M          model directory or synth:PRESET (default synth:qwen3-next-80b-a3b)
  -w, --workers LIST     expert worker counts, comma separated (default 1)
  -p, --prompt N         prompt tokens (default 512)
  -n, --n-gen N          generated tokens (default 128)
  -r, --reps N           measured requests per worker count (default 2)
  -t, --threads N        compute threads per expert worker (default 0 = all)
  -c, --ctx-size N       context (default prompt + n-gen + 16)
      --backend B        cpu or cuda (default cpu)
      --vram-budget SIZE cuda: VRAM budget (default: the coordinator's, 14GiB)
      --resident-bytes S cpu backend: routed experts kept in the GPU worker (default 0)
      --ready-timeout S  seconds to wait for the cluster to be ready (default 600)
      --bin-dir DIR      hmoe binaries (env HMOE_BIN_DIR; default ../build/bin beside this)
  -h, --help             this help

Output: one line per request, then a table (markdown) with the mean of the measured requests:
  | workers | backend | pp<P> tok/s | tg<N> tok/s | TTFT ms |
USAGE
}

die() { echo "bench-cluster: error: $*" >&2; exit "${2:-1}"; }

model="synth:qwen3-next-80b-a3b" workers="1" np=512 ng=128 reps=2 threads="" ctx=""
backend="cpu" vram="" resident="" ready_to=600 bin_dir="${HMOE_BIN_DIR:-}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -m|--model) model="${2:-}"; shift 2 ;;
    -w|--workers) workers="${2:-}"; shift 2 ;;
    -p|--prompt) np="${2:-}"; shift 2 ;;
    -n|--n-gen) ng="${2:-}"; shift 2 ;;
    -r|--reps) reps="${2:-}"; shift 2 ;;
    -t|--threads) threads="${2:-}"; shift 2 ;;
    -c|--ctx-size) ctx="${2:-}"; shift 2 ;;
    --backend) backend="${2:-}"; shift 2 ;;
    --vram-budget) vram="${2:-}"; shift 2 ;;
    --resident-bytes) resident="${2:-}"; shift 2 ;;
    --ready-timeout) ready_to="${2:-}"; shift 2 ;;
    --bin-dir) bin_dir="${2:-}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "bench-cluster: error: unknown option '$1'" >&2; echo "see --help" >&2; exit 1 ;;
  esac
done
isnum() { [[ "$1" =~ ^[0-9]+$ ]]; }
isnum "$np" && [ "$np" -ge 1 ] || die "--prompt '$np': expected a positive number"
isnum "$ng" && [ "$ng" -ge 2 ] || die "--n-gen '$ng': expected a number >= 2"
isnum "$reps" && [ "$reps" -ge 1 ] || die "--reps '$reps': expected a positive number"
isnum "$ready_to" || die "--ready-timeout '$ready_to': expected seconds"
[[ "$workers" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--workers '$workers': expected e.g. 1 or 1,2,4"
[ -n "$ctx" ] || ctx=$((np + ng + 16))

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ -n "$bin_dir" ] || bin_dir="$here/../build/bin"
[ -x "$bin_dir/hmoe" ] && [ -x "$bin_dir/hmoe-coordinator" ] ||
  die "hmoe binaries not found in '$bin_dir'
hint: build first (cmake -S . -B build && cmake --build build) or pass --bin-dir"

tmp=$(mktemp -d /tmp/hmoe-bench-XXXXXX) || die "mktemp failed" 2
lp=""
cleanup() {
  if [ -n "$lp" ] && kill -0 "$lp" 2>/dev/null; then
    kill -TERM "$lp" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$lp" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fixed pseudo-random prompt of n ids in [1, vocab - 3] (LCG, seed 1: the same for every run).
make_prompt() {
  awk -v n="$1" -v v="$2" 'BEGIN { s = 1; for (i = 0; i < n; i++) {
      s = (s * 1103515245 + 12345) % 2147483648; printf "%s%d", i ? " " : "", 1 + s % (v - 3) } }'
}

# "# 128 tokens (length): 41.23 tok/s; TTFT 812.0 ms; prompt 512 tokens in 800.1 ms" ->
# "tg pp ttft"
parse_stats() {
  sed -n 's/^# \([0-9]*\) tokens ([a-z]*): \([0-9.]*\) tok\/s; TTFT \([0-9.]*\) ms; prompt \([0-9]*\) tokens in \([0-9.]*\) ms.*/\2 \4 \5 \3/p' "$1" |
    awk '{ pp = $3 > 0 ? $2 * 1000 / $3 : 0; printf "%.2f %.2f %.1f\n", $1, pp, $4 }'
}

rows=()
rc=0
IFS=',' read -r -a wlist <<<"$workers"
for w in "${wlist[@]}"; do
  run="$tmp/run-$w"
  largs=(-m "$model" --workers "$w" --run-dir "$run" --ctx-size "$ctx" --backend "$backend")
  [ -n "$vram" ] && largs+=(--vram-budget "$vram")
  [ -n "$resident" ] && largs+=(--resident-bytes "$resident")
  cargs=()
  [ -n "$threads" ] && cargs+=(--threads "$threads")
  echo "bench-cluster: starting $w expert worker(s): hmoe-launch ${largs[*]} -- ${cargs[*]} ${extra[*]}" >&2
  t0=$(date +%s)
  HMOE_BIN_DIR="$bin_dir" "$here/hmoe-launch" "${largs[@]}" -- "${cargs[@]}" "${extra[@]}" \
    >"$tmp/out-$w" 2>"$tmp/log-$w" &
  lp=$!
  ready=0
  while [ $(($(date +%s) - t0)) -lt "$ready_to" ]; do
    if grep -q '^ready: listening on ipc://' "$tmp/out-$w"; then ready=1; break; fi
    kill -0 "$lp" 2>/dev/null || break
    sleep 0.2
  done
  if [ "$ready" != 1 ]; then
    echo "bench-cluster: the cluster with $w worker(s) did not become ready; its log:" >&2
    tail -30 "$tmp/log-$w" >&2
    rows+=("| $w | $backend | failed | failed | - |")
    rc=2
  else
    echo "bench-cluster: ready after $(($(date +%s) - t0)) s" >&2
    vocab=$("$bin_dir/hmoe" status --run-dir "$run" | sed -n 's/.*vocab \([0-9]*\),.*/\1/p')
    isnum "${vocab:-x}" && [ "$vocab" -gt 8 ] || { vocab=0; }
    if [ "$vocab" = 0 ]; then
      echo "bench-cluster: cannot read the vocabulary size from hmoe status" >&2
      rows+=("| $w | $backend | failed | failed | - |")
      rc=2
    else
      prompt=$(make_prompt "$np" "$vocab")
      # warm-up (first touch of pages, CUDA graphs, thread pools): not counted
      "$bin_dir/hmoe" --run-dir "$run" --tokens "$(make_prompt 16 "$vocab")" -n 4 --ignore-eos \
        --temp 0 >/dev/null 2>"$tmp/warm" || echo "bench-cluster: warm-up failed: $(cat "$tmp/warm")" >&2
      sum_tg=0 sum_pp=0 sum_ttft=0 ok=0
      for r in $(seq 1 "$reps"); do
        if "$bin_dir/hmoe" --run-dir "$run" --tokens "$prompt" -n "$ng" --ignore-eos --temp 0 \
            >"$tmp/toks" 2>"$tmp/stats"; then
          read -r tg pp ttft < <(parse_stats "$tmp/stats")
          ntok=$(wc -w <"$tmp/toks")
          if [ -n "${tg:-}" ] && [ "$ntok" = "$ng" ]; then
            echo "workers $w rep $r: pp$np $pp tok/s, tg$ng $tg tok/s, TTFT $ttft ms" >&2
            sum_tg=$(awk -v a="$sum_tg" -v b="$tg" 'BEGIN { print a + b }')
            sum_pp=$(awk -v a="$sum_pp" -v b="$pp" 'BEGIN { print a + b }')
            sum_ttft=$(awk -v a="$sum_ttft" -v b="$ttft" 'BEGIN { print a + b }')
            ok=$((ok + 1))
          else
            echo "bench-cluster: request $r: $ntok tokens, stats: $(cat "$tmp/stats")" >&2
            rc=2
          fi
        else
          echo "bench-cluster: request $r failed: $(cat "$tmp/stats")" >&2
          rc=2
        fi
      done
      "$bin_dir/hmoe" status --run-dir "$run" >"$tmp/status-$w" 2>&1 && sed 's/^/  /' "$tmp/status-$w" >&2
      if [ "$ok" -gt 0 ]; then
        rows+=("$(awk -v w="$w" -v b="$backend" -v k="$ok" -v tg="$sum_tg" -v pp="$sum_pp" -v t="$sum_ttft" \
          'BEGIN { printf "| %d | %s | %.2f | %.2f | %.1f |", w, b, pp / k, tg / k, t / k }')")
      else
        rows+=("| $w | $backend | failed | failed | - |")
      fi
    fi
  fi
  kill -TERM "$lp" 2>/dev/null
  for _ in $(seq 1 300); do kill -0 "$lp" 2>/dev/null || break; sleep 0.1; done
  wait "$lp" 2>/dev/null
  lrc=$?
  [ "$lrc" = 0 ] || { echo "bench-cluster: hmoe-launch exited $lrc; log tail:" >&2; tail -15 "$tmp/log-$w" >&2; rc=2; }
  lp=""
done

echo "model $model, prompt $np tokens, $ng generated, $reps request(s) each, context $ctx"
echo "| workers | backend | pp$np tok/s | tg$ng tok/s | TTFT ms |"
echo "|---|---|---|---|---|"
for r in "${rows[@]}"; do echo "$r"; done
exit $rc
