#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SHOAL_FUZZ_SECONDS (default 45),
# starting from its committed corpus (fuzz/corpus/TARGET, read only: new
# inputs go to a temporary directory; `SHOAL_FUZZ_KEEP=1` adds them to the
# corpus instead). Exits non-zero if any target crashed, leaving the input in
# fuzz/artifacts/TARGET/. Prints every target's executions and their total.
#
# `bash fuzz/run.sh build` only builds (CI starts that early, in the
# background). Targets run SHOAL_FUZZ_JOBS at a time (default: the number of
# CPUs); each is one single-threaded libFuzzer process, and takes libFuzzer's
# flags: `target/fuzzing/debug/TARGET FILE` replays a crash's input.
#
# The build. The targets are libFuzzer binaries (libfuzzer-sys), built by
# cargo alone. The crates under test (shoal-core, -chunk, -meta, -proto,
# -tls and the targets) are compiled with the coverage instrumentation
# libFuzzer steers by (fuzz/rustc-coverage.sh adds it: cargo-fuzz 0.13's
# default flags, with no sanitizer, since the code is safe Rust and the
# targets look for panics, broken invariants and failed round trips), fully
# optimized in one codegen unit each, with debug assertions and overflow
# checks on. libFuzzer's own C++ is optimized too. Everything else is the
# test build's debug build of it, uninstrumented: when `cargo test
# --workspace` has built into target/debug, its compiled dependencies are
# linked into target/fuzzing/debug, where cargo finds them fresh, so only
# the crates under test (and a few build-time crates) are compiled again.
# Measured here: 704 CPU-seconds for the old build of its own (cargo fuzz,
# every crate instrumented, dependencies at opt-level 1), about 400 now;
# and more executions, since dependencies no longer pay for instrumentation
# (4.0M against 3.3M in 10 s per target, all six). The price: openraft,
# prost, postcard and tonic give libFuzzer no coverage of their own.
#
# Features are unified over the whole workspace, as in the test build
# (which selects every member), or the dependencies would not match it.
# That resolver setting is unstable in cargo; cargo's channel override
# (its own test hook, which a later cargo may drop: the build then fails on
# -Zfeature-unification, loudly) allows it on the stable toolchain here.
# RUSTC_BOOTSTRAP=1 would too, but build scripts (proc-macro2's, anyhow's)
# watch that variable, and setting it would make those crates, and all
# that depend on them, stale.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
out="$root/target/fuzzing"
export CARGO_INCREMENTAL=0
seconds=${SHOAL_FUZZ_SECONDS:-45}
jobs=${SHOAL_FUZZ_JOBS:-$(nproc)}
jobs=$((jobs < 1 ? 1 : jobs))
targets=(path_parse chunk_files meta_records fsm_apply meta_rpc chunk_rpc)
under_test=(shoal-core shoal-chunk shoal-meta shoal-proto shoal-tls shoal-fuzz)
# What fuzz/rustc-coverage.sh instruments, by crate name: the library crates
# under test and every target.
SHOAL_FUZZ_INSTRUMENT="${under_test[*]//-/_} ${targets[*]}"
export SHOAL_FUZZ_INSTRUMENT

# Links the test build's compiled dependencies into target/fuzzing/debug,
# unless that exists (cargo then rebuilds what is stale there). Hard links
# for the compiled crates, which nothing writes again (a crate compiled anew
# gets new files: rustc writes rlibs and rmetas by renaming, and the linker
# unlinks first); copies of cargo's own records, which it rewrites. rustc's
# dependency files (deps/*.d), written in place, are left out: cargo reads
# its own copies in .fingerprint. The crates under test stay behind.
reuse_test_build() {
  local from="$root/target/debug" to="$out/debug" part="$out/debug.partial"
  [ -d "$from/deps" ] && [ -d "$from/.fingerprint" ] && [ ! -d "$to" ] || return 0
  rm -rf "$part"
  mkdir -p "$part/deps"
  find "$from/deps" -maxdepth 1 -type f ! -name '*shoal*' \
    \( -name '*.rlib' -o -name '*.rmeta' -o -name '*.so' -o -name '*.a' \) -exec ln -t "$part/deps" {} +
  cp -a "$from/.fingerprint" "$from/build" "$part/"
  rm -f "$part"/.fingerprint/shoal-*/*lib-shoal_*
  mv "$part" "$to" # whole or not at all: a stopped copy is not taken for one
}

build() {
  local config=() c
  # libFuzzer's own C++ (libfuzzer-sys builds it with the crate's
  # opt-level): unoptimized, it takes most of every execution.
  for c in "${under_test[@]}" libfuzzer-sys; do
    config+=(--config "profile.dev.package.$c.opt-level=3" --config "profile.dev.package.$c.codegen-units=1")
  done
  reuse_test_build
  # Features unified over the whole workspace, as in the test build (which
  # selects every member), so that its compiled dependencies match.
  # (cargo's fingerprints ignore RUSTC_WRAPPER: the crates under test are
  # built anew because their profile differs from the test build's, and
  # instrumented() below checks that the wrapper reached them.)
  (cd "$root" && __CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS=nightly \
    RUSTC_WRAPPER="$root/fuzz/rustc-coverage.sh" cargo build -Zfeature-unification \
    --config 'resolver.feature-unification="workspace"' "${config[@]}" \
    --locked -p shoal-fuzz --bins --target-dir "$out")
}

# The crates under test and the targets must carry the instrumentation
# (cargo would take a fresh uninstrumented build of one for a good one):
# every such library and binary in target/fuzzing has coverage counters.
instrumented() {
  local c f bad=0 files=()
  for c in "${under_test[@]//-/_}"; do files+=("$out"/debug/deps/lib"$c"-*.rlib); done
  for f in "${files[@]}" "${targets[@]/#/$out/debug/}"; do
    # grep reads all of nm's output (with -q, nm could die of SIGPIPE, and
    # pipefail would count that as no match).
    if [ -e "$f" ] && ! nm "$f" 2>/dev/null | grep __sancov_gen_ >/dev/null; then
      echo "$f has no coverage instrumentation (remove target/fuzzing and build again)" >&2
      bad=1
    fi
  done
  return "$bad"
}

build
instrumented
if [ "${1:-}" = build ]; then
  exit 0
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# Runs one target; its output goes to $logs/TARGET.log, its status to
# $logs/TARGET.status.
run_one() {
  local t=$1 fresh dirs status=0
  mkdir -p "corpus/$t" "artifacts/$t"
  fresh=$(mktemp -d)
  dirs=("$fresh" "corpus/$t")
  if [ "${SHOAL_FUZZ_KEEP:-0}" = 1 ]; then dirs=("corpus/$t"); fi
  "$out/debug/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" -max_len=4096 \
    -print_final_stats=1 "${dirs[@]}" >"$logs/$t.log" 2>&1 || status=$?
  echo "$status" >"$logs/$t.status"
  rm -rf "$fresh"
}

running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait

total=0
failed=0
for t in "${targets[@]}"; do
  if [ "$(cat "$logs/$t.status")" != 0 ]; then
    tail -40 "$logs/$t.log"
    echo "fuzz target $t crashed; the input is in fuzz/artifacts/$t/" >&2
    failed=1
    continue
  fi
  runs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$logs/$t.log" | grep -Eo '[0-9]+$' || echo 0)
  echo "fuzz $t: $runs executions in ${seconds}s, no crash"
  total=$((total + runs))
done
echo "fuzz total: $total executions"
exit "$failed"
