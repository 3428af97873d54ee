#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), JOBS at a time (default 2), with a
# memory bound, and prints one line per target: run time, executions, coverage, corpus size and
# whether it found anything (crash inputs land in fuzz/artifacts/<target>/).
#   fuzz/run-all.sh [SECONDS] [JOBS] [TARGET ...]
set -uo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"; jobs="${2:-2}"; shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(config corpus captions tokenizer image safetensors model_dir pth score catalog archive)
mkdir -p logs
cargo +nightly fuzz build -O -s none >/dev/null 2>&1 || { echo "cargo fuzz build failed"; exit 1; }
run() {
  local t="$1"
  mkdir -p "corpus/$t"
  cargo +nightly fuzz run -O -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 >"logs/$t.log" 2>&1
  local rc=$?
  local last; last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)
  local execs; execs=$(grep -E '^stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}')
  local found="no findings"
  [ $rc -ne 0 ] && found="FINDING (exit $rc): $(ls -t artifacts/$t 2>/dev/null | head -1)"
  printf '%-12s %5ss  execs %-10s %s | %s\n' "$t" "$secs" "${execs:-?}" "$(echo "$last" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9A-Za-z]+')" "$found"
}
export -f run; export secs
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run {}'
