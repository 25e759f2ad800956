#!/usr/bin/env bash
# The mount's small-file rows, with the meta and chunk calls each file costs:
# 4 processes create COUNT/4 files of 4 KiB each (`head -c 4096 /dev/urandom
# > FILE`), then, after dropping caches, 4 processes read them back (`cat`),
# then one `rm -rf` removes them. For each phase: files/s and the calls per
# file (from the nodes' `shoal_rpc_requests_total`). A release `shoal up
# --mount` cluster (3 meta nodes, 3 chunk servers, replication 2, TLS). As
# root (FUSE, dropping the page cache). Uses ports 17640-17672 and a
# scratch directory (default /tmp/shoal-per-file; removed first).
#
#   bash crates/shoal-fuse/bench/per_file.sh [DIR]    (COUNT=2000 by default)
set -u
cd "$(dirname "$0")/../../.."
B=$(realpath "${SHOAL_BIN:-target/release/shoal}")
W=${1:-/tmp/shoal-per-file}
COUNT=${COUNT:-2000}
per=$((COUNT / 4))
. crates/shoal-fuse/bench/up.sh
up_mounted "$B" "$W" 17640

# Calls so far, one "METHOD COUNT" line each, summed over the nodes (meta
# HTTP ports base+20.., chunk servers' base+30..) and result codes.
calls() {
  for p in 17660 17661 17662 17670 17671 17672; do curl -s "http://127.0.0.1:$p/metrics"; done |
    python3 -c '
import re, sys, collections
n = collections.Counter()
for m in re.finditer(r"^shoal_rpc_requests_total\{method=\"([^\"]+)\",[^}]*\} (\d+)", sys.stdin.read(), re.M):
    n[m.group(1)] += int(m.group(2))
for k, v in sorted(n.items()):
    print(k, v)'
}
# PHASE FILES T0 T1 BEFORE AFTER: the rate and the calls per file.
report() {
  python3 -c '
import sys
phase, files, t0, t1, before, after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
def load(text):
    return {l.split()[0]: int(l.split()[1]) for l in text.splitlines() if l.strip()}
b, a = load(before), load(after)
print(f"{phase}: {files / (t1 - t0):.1f} files/s")
for k in sorted(a):
    d = a[k] - b.get(k, 0)
    if d > 0 and not k.startswith(("shoal.raft.", "shoal.meta.v1.Cluster/")):
        print("  %s %.2f per file" % (k.rsplit(".", 1)[-1], d / files))' "$@"
}
now() { date +%s.%N; }

mkdir "$W/mnt/small"
before=$(calls); t0=$(now)
pids=()
for w in 0 1 2 3; do
  ( for i in $(seq 1 "$per"); do head -c 4096 /dev/urandom > "$W/mnt/small/f$w-$i"; done ) &
  pids+=($!)
done
wait "${pids[@]}"
t1=$(now); report create $((per * 4)) "$t0" "$t1" "$before" "$(calls)"

sync; echo 3 > /proc/sys/vm/drop_caches
before=$(calls); t0=$(now)
pids=()
for w in 0 1 2 3; do
  ( for i in $(seq 1 "$per"); do cat "$W/mnt/small/f$w-$i" > /dev/null; done ) &
  pids+=($!)
done
wait "${pids[@]}"
t1=$(now); report read $((per * 4)) "$t0" "$t1" "$before" "$(calls)"

before=$(calls); t0=$(now)
rm -rf "$W/mnt/small"
t1=$(now); report rm $((per * 4)) "$t0" "$t1" "$before" "$(calls)"
