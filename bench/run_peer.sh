#!/usr/bin/env bash
# Runs the PyTorch peer (../shared/bench/torch_mt.py) and our `seq2seq bench` side by side on
# this machine, with 2 threads each, one after the other (never concurrently).
#
#   bench/run_peer.sh [DATA_DIR] [MINUTES]
#
# The peer needs torch and sacrebleu: they go into a throwaway virtual environment under
# /tmp/seq2seq-peer-venv (not part of CI). Our figures come from a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/datasets}
MINUTES=${2:-3}
VENV=/tmp/seq2seq-peer-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch sacrebleu
fi
cargo build --release -p seq2seq-cli
echo "== PyTorch peer (2 threads, $MINUTES min of training, greedy test2016)"
OMP_NUM_THREADS=2 "$VENV/bin/python" ../shared/bench/torch_mt.py "$DATA/multi30k" en de --minutes "$MINUTES" --threads 2 --bleu | grep RESULT
for cfg in configs/multi30k-en-de-bahdanau.yaml configs/multi30k-en-de.yaml; do
  echo "== seq2seq bench $cfg (RAYON_NUM_THREADS=2)"
  RAYON_NUM_THREADS=2 ./target/release/seq2seq bench "$cfg" --data-dir "$DATA" --train-steps 100
done
