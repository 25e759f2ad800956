#!/usr/bin/env bash
# The mount's small-file rows, with the meta and chunk calls each file costs:
# 4 processes create COUNT/4 files of 4 KiB each (`head -c 4096 /dev/urandom
# > FILE`), then, after dropping caches, 4 processes read them back (`cat`),
# then one `rm -rf` removes them. For each phase: files/s, and for each call
# how many each file cost and the mean time a node took to answer one
# (from the nodes' `shoal_rpc_requests_total` and
# `shoal_rpc_duration_seconds`). A release `shoal up
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

# Calls so far, one "METHOD COUNT SECONDS" line each (SECONDS: the time
# spent answering them), summed over the nodes (meta HTTP ports base+20..,
# chunk servers' base+30..) and result codes.
calls() {
  for p in 17660 17661 17662 17670 17671 17672; do curl -s "http://127.0.0.1:$p/metrics"; done |
    python3 -c '
import re, sys, collections
text = sys.stdin.read()
n, s = collections.Counter(), collections.Counter()
def method(labels):
    m = re.search(r"(?:^|,)method=\"([^\"]+)\"", labels)
    return m.group(1) if m else None
for name, into, value in (("shoal_rpc_requests_total", n, int), ("shoal_rpc_duration_seconds_sum", s, float)):
    for m in re.finditer(r"^" + name + r"\{([^}]*)\} (\S+)", text, re.M):
        if method(m.group(1)):
            into[method(m.group(1))] += value(m.group(2))
for k, v in sorted(n.items()):
    print(k, v, s[k])'
  # CPU seconds each process of this cluster has used so far: "cpu:NAME 0
  # SECONDS" (the mount runs in `shoal up`'s own process, UP; the nodes are
  # its children).
  local tick pid name st
  tick=$(getconf CLK_TCK)
  for pid in "$UP" $(pgrep -P "$UP"); do
    read -r -a st < "/proc/$pid/stat" || continue
    name=$(tr '\0' ' ' < "/proc/$pid/cmdline" | awk '{ print ($2 == "up" ? "mount" : $2 == "meta" ? "meta-" $4 : "chunk@" $4) }')
    awk -v name="$name" -v ticks="$(( st[13] + st[14] ))" -v tick="$tick" 'BEGIN { printf "cpu:%s 0 %.3f\n", name, ticks / tick }'
  done
}
# PHASE FILES T0 T1 BEFORE AFTER: the rate, the calls per file and their
# mean answer time.
report() {
  python3 -c '
import sys
phase, files, t0, t1, before, after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
def load(text):
    return {l.split()[0]: (int(l.split()[1]), float(l.split()[2])) for l in text.splitlines() if l.strip()}
b, a = load(before), load(after)
print(f"{phase}: {files / (t1 - t0):.1f} files/s")
for k in sorted(a):
    n, secs = a[k][0] - b.get(k, (0, 0.0))[0], a[k][1] - b.get(k, (0, 0.0))[1]
    if k.startswith("cpu:"):
        print("  CPU of %s: %.2f ms per file" % (k[4:], 1000 * secs / files))
    elif n > 0 and not k.startswith(("shoal.raft.", "shoal.meta.v1.Cluster/")):
        print("  %s %.2f per file, %.2f ms each" % (k.rsplit(".", 1)[-1], n / files, 1000 * secs / n))' "$@"
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
