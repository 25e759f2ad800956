#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SHOAL_FUZZ_SECONDS (default 45),
# starting from its committed corpus (fuzz/corpus/TARGET, read only: new
# inputs go to a temporary directory; `SHOAL_FUZZ_KEEP=1` adds them to the
# corpus instead). Exits non-zero on the first crash, leaving the input in
# fuzz/artifacts/TARGET/. Prints every target's executions and their total.
#
# cargo fuzz needs nightly-only flags; on the stable toolchain here,
# RUSTC_BOOTSTRAP=1 allows them. No sanitizer (the code is safe Rust): the
# targets look for panics, broken invariants and failed round trips, with
# debug assertions (and overflow checks) on.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
seconds=${SHOAL_FUZZ_SECONDS:-45}
targets=(path_parse chunk_files meta_records fsm_apply)
cargo fuzz build -s none -O -a
total=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  fresh=$(mktemp -d)
  dirs=("$fresh" "corpus/$t")
  if [ "${SHOAL_FUZZ_KEEP:-0}" = 1 ]; then dirs=("corpus/$t"); fi
  if ! cargo fuzz run -s none -O -a "$t" "${dirs[@]}" -- -max_total_time="$seconds" -max_len=4096 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t crashed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo 0)
  echo "fuzz $t: $runs executions in ${seconds}s, no crash"
  total=$((total + runs))
  rm -rf "$log" "$fresh"
done
echo "fuzz total: $total executions"
