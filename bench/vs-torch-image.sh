#!/usr/bin/env bash
# The image side against PyTorch, 2 threads each side, one after the other (never concurrently):
# EfficientNet-Lite0's forward (224x224 -> 7x7x1280, batch 32), its training step with the last
# two blocks and the head fine-tuned, and the small CNN of configs/flickr8k.yaml (96x96) forward
# and training step.
#
#   bench/vs-torch-image.sh [DATA_DIR] [ROUNDS] [REPS]
#
# Each round runs bench/torch_image.py (plain PyTorch, random weights, eval mode and
# inference_mode for the forward, the faster of NCHW and channels-last kept), then
# `seq2seq bench` on configs/flickr8k-lite0.yaml, on the same config with fine_tune_blocks: 2,
# and on configs/flickr8k.yaml. Both sides report the median of REPS timed batches (after two
# warm-ups) in images/s. The
# Lite0 checkpoint is read from DATA_DIR/../models when present (its values do not change the
# work). PY=python with torch (default: the JoeyNMT venv of ../shared/bench/run_joeynmt.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(cd "${1:-../shared/datasets}" && pwd)
ROUNDS=${2:-1}
REPS=${3:-10}
# Seconds of rest before each process: the previous one's exit (1.2 GB for PyTorch) leaves the
# kernel reclaiming pages for a moment, which slowed whichever process came next.
PAUSE=${PAUSE:-5}
PY=${PY:-/root/.cache/seq2seq-joeynmt-venv/bin/python}
"$PY" -c 'import torch' 2>/dev/null || { echo "no torch in $PY (set PY=)"; exit 1; }
cargo build --release -q
S=./target/release/seq2seq
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed 's/fine_tune_blocks: 0/fine_tune_blocks: 2/' configs/flickr8k-lite0.yaml > "$tmp/lite0-ft2.yaml"
ours() { # CONFIG FIELD
  sleep "$PAUSE"
  RAYON_NUM_THREADS=2 $S bench "$1" --data-dir "$DATA" --image-reps "$REPS" --json \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}
summary=()
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r: PyTorch (bench/torch_image.py, 2 threads)"
  sleep "$PAUSE"
  peer=$("$PY" bench/torch_image.py --threads 2 --reps "$REPS" --json)
  echo "$peer"
  echo "== round $r: seq2seq bench (RAYON_NUM_THREADS=2)"
  lite_fwd=$(ours configs/flickr8k-lite0.yaml forward_images_per_s)
  ft_train=$(ours "$tmp/lite0-ft2.yaml" train_images_per_s)
  cnn_fwd=$(ours configs/flickr8k.yaml forward_images_per_s)
  cnn_train=$(ours configs/flickr8k.yaml train_images_per_s)
  line=$(python3 - "$peer" "$lite_fwd" "$ft_train" "$cnn_fwd" "$cnn_train" "$r" <<'EOF'
import json, sys
p = json.loads(sys.argv[1])
ours = dict(zip(["lite0_forward", "lite0_train", "cnn_forward", "cnn_train"], map(float, sys.argv[2:6])))
out = []
for k, v in ours.items():
    best = max(p[k].values())
    fmt = max(p[k], key=p[k].get)
    out.append(f"{k} {v:.1f} vs {best:.1f} ({fmt}) = {v / best:.2f}x")
print(f"round {sys.argv[6]}: " + "; ".join(out))
EOF
)
  echo "$line"
  summary+=("$line")
done
echo "== summary (images/s, seq2seq vs PyTorch's faster format)"
printf '%s\n' "${summary[@]}"
