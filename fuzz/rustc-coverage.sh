#!/usr/bin/env bash
# RUSTC_WRAPPER for the fuzz build (fuzz/run.sh): adds libFuzzer's coverage
# instrumentation (cargo-fuzz 0.13's default flags, with no sanitizer) to
# the crates under test, named in $SHOAL_FUZZ_INSTRUMENT, and to nothing
# else: not their build scripts, nor any dependency, nor cargo's probes of
# rustc (which name no crate).
rustc=$1
shift
name=
prev=
for arg in "$@"; do
  if [ "$prev" = --crate-name ]; then name=$arg; fi
  prev=$arg
done
if [ -n "$name" ]; then
  case " ${SHOAL_FUZZ_INSTRUMENT:-} " in
    *" $name "*)
      exec "$rustc" "$@" -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
        -Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing
      ;;
  esac
fi
exec "$rustc" "$@"
