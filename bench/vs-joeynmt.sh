#!/usr/bin/env bash
# Training speed and peak memory against JoeyNMT 2.3 on its own RNN architecture (word level,
# bi-GRU 256 per direction, GRU 512 decoder with additive attention and input feeding, batch 64)
# on Multi30k en->de, 2 threads each side, one after the other (never concurrently).
#
#   bench/vs-joeynmt.sh [DATA_DIR] [STEPS] [ROUNDS]
#
# Each round runs the peer (../shared/bench/run_joeynmt.sh, which installs JoeyNMT into a
# throwaway venv on first use; not part of CI) for STEPS steps, then `seq2seq bench` on
# configs/multi30k-en-de-joeynmt.yaml for as many timed steps. Both sides report the median of
# their 20-step windows of target tokens/s; peak RSS is the peer's process tree under
# /usr/bin/time and our bench process's own. The last lines give the ratio of every round.
# BEFORE=PATH also benches another seq2seq binary (an older build) in each round.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(cd "${1:-../shared/datasets}" && pwd)
STEPS=${2:-160}
ROUNDS=${3:-1}
PEER=../shared/bench/run_joeynmt.sh
[ -x "$PEER" ] || [ -f "$PEER" ] || { echo "no peer script at $PEER"; exit 1; }
cargo build --release -q
S=./target/release/seq2seq
summary=()
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r: JoeyNMT 2.3 ($STEPS steps, OMP_NUM_THREADS=2)"
  out=$( { /usr/bin/time -f "PEAK_KB %M" bash "$PEER" "$DATA" "$STEPS"; } 2>&1 )
  echo "$out" | grep -E "RESULT|PEAK_KB"
  joey=$(echo "$out" | sed -n 's/^RESULT joeynmt train_tok_per_s_median \([0-9.]*\).*/\1/p')
  joey_mb=$(echo "$out" | sed -n 's/^PEAK_KB \([0-9]*\)/\1/p' | awk '{printf "%.0f", $1 / 1024}')
  [ -n "$joey" ] || { echo "$out" | tail -5; exit 1; }
  echo "== round $r: seq2seq bench configs/multi30k-en-de-joeynmt.yaml ($STEPS steps, RAYON_NUM_THREADS=2)"
  # No trained model under runs/multi30k-en-de-joeynmt: training figures only.
  ours_json=$(RAYON_NUM_THREADS=2 $S bench configs/multi30k-en-de-joeynmt.yaml --data-dir "$DATA" \
    --train-steps "$STEPS" --json)
  ours=$(echo "$ours_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["train_tokens_per_s_median"])')
  ours_mb=$(echo "$ours_json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["peak_rss_mb"]))')
  if [ -n "${BEFORE:-}" ]; then
    echo "== round $r: the same with $BEFORE"
    before=$(RAYON_NUM_THREADS=2 "$BEFORE" bench configs/multi30k-en-de-joeynmt.yaml --data-dir "$DATA" \
      --train-steps "$STEPS" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["train_tokens_per_s_median"])')
    echo "round $r: $BEFORE $before tok/s"
  fi
  line=$(python3 -c "print(f'round $r: JoeyNMT {float($joey):.0f} tok/s, {int($joey_mb)} MB; seq2seq {float($ours):.0f} tok/s, {int($ours_mb)} MB; speed {float($ours)/float($joey):.2f}x, memory {int($ours_mb)/int($joey_mb):.2f}x')")
  echo "$line"
  summary+=("$line")
done
echo "== summary"
printf '%s\n' "${summary[@]}"
