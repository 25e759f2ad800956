#!/usr/bin/env bash
# fsx at issue 11's length, by hand (CI runs 10,000 operations in t97: this
# many take about 27 minutes in its debug build): `fsx_long.sh [OPS [SEED]]`
# runs fsx 0.3.2 (`cargo install --locked fsx@0.3.2`) with OPS operations
# (default 100000) at SEED (default: drawn, and printed) on a file in a
# `shoal up --mount` of a release build (`cargo build --release -p shoal`),
# with t97's configuration, `fsx.toml` beside this script (3 MiB file,
# operations up to 256 KiB, mmap, truncates, fallocate, hole punching,
# fsyncs, reopens). As
# root. Prints the seed, the seconds it took and fsx's last line ("All
# operations completed A-OK!"). Uses ports 17800-17832 and
# /tmp/shoal-fsx-long (removed first).
set -u
cd "$(dirname "$0")/../../.."
B=$(realpath "${SHOAL_BIN:-target/release/shoal}")
OPS=${1:-100000}
SEED=${2:-$(( (RANDOM * 32768 + RANDOM) % 1000000 + 1 ))}
W=/tmp/shoal-fsx-long
. crates/shoal-fuse/bench/up.sh
up_mounted "$B" "$W" 17800
cp crates/shoal-fuse/bench/fsx.toml "$W/fsx.toml"
mkdir -p "$W/artifacts"
echo "fsx -N $OPS -S $SEED"
t0=$(date +%s)
fsx -f "$W/fsx.toml" -N "$OPS" -S "$SEED" -P "$W/artifacts" "$W/mnt/fsx-file" > "$W/fsx.log" 2>&1
rc=$?
echo "exit $rc after $(( $(date +%s) - t0 )) s: $(tail -1 "$W/fsx.log")"
exit $rc
