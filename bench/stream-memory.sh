#!/usr/bin/env bash
# Peak memory of training on a streamed corpus (data.streaming) as the corpus grows: a generated
# 200 MB and 2 GB TSV corpus, the same small model and steps, and the 200 MB one read whole for
# contrast. Every run makes the full passes over its corpus (counting the items, reading the
# held-out ones, learning both vocabularies) and then trains STEPS steps of 16000 target tokens
# (the first buffers of the stream). FULL=1 also trains one whole epoch of the 200 MB corpus
# streamed, and WHOLE_LARGE=1 reads the 2 GB corpus whole too (several GB of memory).
#
#   bench/stream-memory.sh [WORK_DIR] [STEPS]
#
# The corpus: 120,000 distinct pairs of random "words" (an 8000-word Zipf vocabulary per side,
# 4-24 words a sentence) from a seeded generator, sampled with replacement to size by a seeded
# `shuf -r`. WORK_DIR (default /tmp/seq2seq-stream-bench) needs about 2.5 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/seq2seq-stream-bench}
STEPS=${2:-300}
mkdir -p "$W/corpus"
cargo build --release -q
S=$PWD/target/release/seq2seq

if [ ! -f "$W/pool.tsv" ]; then
  python3 - "$W/pool.tsv" <<'PY'
import random, sys
words = lambda rng: ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(8000)]
en, de = words(random.Random(1)), words(random.Random(2))
zipf = [1.0 / (i + 1) for i in range(8000)]
rng = random.Random(3)
with open(sys.argv[1], "w") as f:
    for _ in range(120000):
        idx = rng.choices(range(8000), weights=zipf, k=rng.randint(4, 24))
        f.write(" ".join(en[i] for i in idx) + "\t" + " ".join(de[i] for i in reversed(idx)) + "\n")
PY
fi
seeded() { openssl enc -aes-256-ctr -pass pass:"$1" -nosalt </dev/zero 2>/dev/null; }
avg=$(( $(stat -c %s "$W/pool.tsv") / $(wc -l < "$W/pool.tsv") ))
for mb in 200 2000; do
  f="$W/corpus/c$mb.tsv"
  [ -f "$f" ] || shuf -r -n $(( mb * 1000000 / avg )) --random-source=<(seeded "$mb") "$W/pool.tsv" > "$f"
done

config() { # FILE STREAMING
  cat <<YAML
name: stream-bench
seed: 1
data:
  format: tsv
  root: corpus
  file: $1
  streaming: $2
  shuffle_buffer: 100000
  valid_size: 500
  test_size: 500
  max_src_len: 30
  max_tgt_len: 30
  src_vocab: {level: word, max_size: 1000}
  tgt_vocab: {level: word, max_size: 1000}
model:
  encoder: {embedding_dim: 16, hidden_size: 16}
  decoder: {embedding_dim: 16, hidden_size: 32, attention_dim: 16}
train:
  batch_type: tokens
  batch_size: 16000
  max_steps: 100000
  max_epochs: 1
  valid_every: 100000
  log_every: 100
  patience: 0
YAML
}

run() { # LABEL FILE STREAMING [MAX_STEPS]
  config "$2" "$3" > "$W/run.yaml"
  rm -rf "$W/run"
  local steps=()
  [ -n "${4:-}" ] && steps=(--max-steps "$4")
  out=$( { RAYON_NUM_THREADS=2 /usr/bin/time -f "PEAK_KB %M WALL_S %e" \
    "$S" train "$W/run.yaml" --data-dir "$W" --out "$W/run" "${steps[@]}" >/dev/null; } 2>&1 )
  peak=$(echo "$out" | sed -n 's/^PEAK_KB \([0-9]*\).*/\1/p')
  wall=$(echo "$out" | sed -n 's/.*WALL_S \([0-9.]*\).*/\1/p')
  [ -n "$peak" ] || { echo "$out" | tail -5; exit 1; }
  printf "RESULT %-34s corpus %5s MB  peak RSS %5d MB  wall %7.1f s\n" "$1" \
    $(( $(stat -c %s "$W/corpus/$2") / 1000000 )) $(( peak / 1024 )) "$wall"
}

run "streamed, $STEPS steps" c200.tsv true "$STEPS"
run "streamed, $STEPS steps" c2000.tsv true "$STEPS"
run "read whole, $STEPS steps" c200.tsv false "$STEPS"
if [ "${WHOLE_LARGE:-0}" = 1 ]; then
  run "read whole, $STEPS steps" c2000.tsv false "$STEPS"
fi
if [ "${FULL:-0}" = 1 ]; then
  run "streamed, one whole epoch" c200.tsv true
fi
