#!/usr/bin/env bash
# Chaos: `kill -9` a training run at KILLS moments (default 20; a quarter inside a checkpoint
# write), resume after each, and compare the final weights and Adam moments with an uninterrupted
# run's, bit for bit. Prints both runs' hashes and one summary line. SEED picks the kill schedule.
#   bench/chaos.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ2SEQ_CHAOS_KILLS="${1:-20}" SEQ2SEQ_CHAOS_SEED="${2:-1}" \
  cargo test -q -p seq2seq --test chaos -- --nocapture 2>&1 | grep -E '^(uninterrupted|killed run|[0-9]+/[0-9]+ kills)'
