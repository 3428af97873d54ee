#!/usr/bin/env bash
# Runs the PyTorch peer (../shared/bench/torch_mt.py) and our `seq2seq bench` side by side on
# this machine, with 2 threads each, one after the other (never concurrently).
#
#   bench/run_peer.sh [DATA_DIR] [MINUTES]
#
# 1. The peer trains the benchmark architecture for MINUTES, then decodes test2016 greedily.
# 2. We train the same architecture (configs/multi30k-en-de-bahdanau.yaml) for as many steps as the
#    peer managed, so that both decode with equally trained models (output lengths, and so decoding
#    speed, depend on how far a model got).
# 3. `seq2seq bench` on that model: training speed, memory, decoding; then the same with the fused
#    CPU ops turned off (SEQ2SEQ_FUSED=0), for the before/after ratio in one run.
# 4. `seq2seq bench` on the shipped quality config with its trained model, if runs/multi30k-en-de exists.
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
cargo build --release
S=./target/release/seq2seq
echo "== PyTorch peer (2 threads, $MINUTES min of training, greedy test2016)"
PEER=$(OMP_NUM_THREADS=2 "$VENV/bin/python" ../shared/bench/torch_mt.py "$DATA/multi30k" en de --minutes "$MINUTES" --threads 2 --bleu | grep RESULT)
echo "$PEER"
STEPS=$(echo "$PEER" | sed -n 's/.* steps \([0-9]*\) .*/\1/p' | head -1)
echo "== ours: the same architecture trained for the peer's $STEPS steps"
# A fresh model every run: an earlier run's model (trained for another step count) would make the
# decoding figures compare unequally trained models.
rm -rf runs/bench-bahdanau
mkdir -p runs
RAYON_NUM_THREADS=2 $S train configs/multi30k-en-de-bahdanau.yaml --data-dir "$DATA" --out runs/bench-bahdanau --max-steps "$STEPS" > runs/bench-bahdanau.log 2>&1 \
  || { echo "training failed:"; tail -5 runs/bench-bahdanau.log; exit 1; }
grep -E "^(stopped|test)" runs/bench-bahdanau.log
for fused in 1 0; do
  echo "== seq2seq bench configs/multi30k-en-de-bahdanau.yaml (RAYON_NUM_THREADS=2, SEQ2SEQ_FUSED=$fused)"
  SEQ2SEQ_FUSED=$fused RAYON_NUM_THREADS=2 $S bench configs/multi30k-en-de-bahdanau.yaml --data-dir "$DATA" --model runs/bench-bahdanau --train-steps 100
done
if [ -d runs/multi30k-en-de ]; then
  echo "== seq2seq bench configs/multi30k-en-de.yaml (the shipped quality config, its trained model)"
  RAYON_NUM_THREADS=2 $S bench configs/multi30k-en-de.yaml --data-dir "$DATA" --model runs/multi30k-en-de --train-steps 100
fi
