#!/usr/bin/env bash
# Interrupts: SIGTERM and SIGINT in the middle of training finish the step, write the resume
# checkpoint and exit 143 / 130; the resumed runs end bit-identical to an uninterrupted one.
# Prints one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q -p seq2seq --test faults sigterm -- --nocapture 2>&1 | grep -E '^SIGTERM'
