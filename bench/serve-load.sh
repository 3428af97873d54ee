#!/usr/bin/env bash
# Load on `seq2seq serve`: wrk on loopback, 16 and 64 connections for SECONDS (default 30) each,
# against POST /v1/translate, one source sentence per request (cycling through SRC), greedy;
# compared with the offline `translate --batch-size 64` throughput on the same sentences,
# measured in the same run. Also counts how many greedy outputs change when a sentence is
# decoded alone (batch 1) rather than in a batch of 64.
#   [MAX_WAIT_MS=M] [BIN=PATH] bench/serve-load.sh MODEL_DIR SRC_FILE [SECONDS]
# BIN runs another seq2seq binary (an earlier build, for a before/after) instead of this tree's.
# e.g. bench/serve-load.sh runs/multi30k-en-de ../shared/datasets/multi30k/test2016.en
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?model directory}; SRC=${2:?source sentences, one per line}; SECS=${3:-30}
command -v wrk >/dev/null || { echo "wrk not found (Debian: apt-get install wrk)" >&2; exit 2; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=target/release/seq2seq
fi
SERVER=""; WORK=$(mktemp -d); trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
N=$(wc -l < "$SRC")
echo "model $MODEL; $N sentences from $SRC; $(nproc) cores"

# Offline: the whole file, minus the time to load the model (translating an empty input).
# Prints "seconds peak-RSS-KiB" of a command whose stdout goes to $2.
timed() {
  local out=$1; shift
  python3 - "$out" "$@" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1], "w") as out, open(sys.argv[-1]) as src:
    subprocess.run(sys.argv[2:-1], stdin=src, stdout=out, stderr=subprocess.DEVNULL, check=True)
print(f"{time.perf_counter() - t:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}
read -r LOAD _ < <(timed /dev/null "$BIN" translate --model "$MODEL" --strategy greedy /dev/null)
for B in 16 64; do
  read -r ALL RSS_OFF < <(timed "$WORK/b$B.txt" "$BIN" translate --model "$MODEL" --strategy greedy --batch-size $B "$SRC")
  RATE=$(python3 -c "print(f'{$N / ($ALL - $LOAD):.1f}')")
  echo "offline translate --batch-size $B: $ALL s (load $LOAD s): $RATE sentences/s, peak RSS $((RSS_OFF / 1024)) MiB"
  [ "$B" = 64 ] && OFFLINE=$RATE
done

# Alone vs batched: the same sentences one at a time.
"$BIN" translate --model "$MODEL" --strategy greedy --batch-size 1 < "$SRC" > "$WORK/b1.txt"
DIFF=$(paste -d '\t' "$WORK/b1.txt" "$WORK/b64.txt" | awk -F '\t' '$1 != $2' | wc -l)
echo "greedy alone vs in a batch of 64: $DIFF of $N outputs differ"

# The requests: one JSON body per sentence, in a Lua table.
python3 - "$SRC" > "$WORK/bodies.lua" <<'PY'
import json, sys
lines = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8")]
print("bodies = {")
for l in lines:
    print("[==[" + json.dumps({"texts": [l], "strategy": "greedy"}) + "]==],")
print("}")
PY
cat > "$WORK/load.lua" <<'LUA'
dofile(os.getenv("BODIES"))
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.3f %.1f %.1f %d\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA

"$BIN" serve --model "bench=$MODEL" --port 0 --max-batch 64 ${MAX_WAIT_MS:+--max-wait-ms $MAX_WAIT_MS} 2> "$WORK/serve.log" &
SERVER=$!
for _ in $(seq 100); do grep -q 'listening on' "$WORK/serve.log" && break; sleep 0.1; done
URL=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$WORK/serve.log")
curl -sf -X POST "$URL/v1/translate" -H 'Content-Type: application/json' -d '{"texts":["warm up"]}' > /dev/null

printf '\n| connections | requests | errors | sentences/s | vs offline | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|\n'
for C in 16 64; do
  R=$(BODIES="$WORK/bodies.lua" wrk -t 2 -c "$C" -d "${SECS}s" --timeout 30s -s "$WORK/load.lua" "$URL/v1/translate" | grep '^RESULT')
  read -r _ REQS DUR P50 P99 ERRS <<< "$R"
  python3 -c "r=$REQS/$DUR; print(f'| $C | $REQS | $ERRS | {r:.1f} | {r/$OFFLINE:.2f}x | $P50 | $P99 |')"
done
echo
echo "server peak RSS: $(awk '/VmHWM/ {print int($2/1024)}' /proc/$SERVER/status) MiB; batches: $(curl -s "$URL/health")"
kill -TERM $SERVER; wait $SERVER && echo "server stopped cleanly (exit 0)"
