#!/usr/bin/env bash
# Small files through the mount under two harnesses, against a local
# directory of the same disk (issue 11's small-write and small-read rows):
#   fork    every file is written (`head -c 4096 /dev/urandom > f`) or read
#           (`cat f`) by a process of its own, as mount_bench.sh does: the
#           harness's fork and exec cost about as much CPU as a file;
#   python  four python3 processes, each opening, writing (or reading) and
#           closing its 500 files in a loop: the file system's cost alone.
# Each: 2,000 files of 4 KiB created, written and closed by 4 workers, then
# read back by 4 workers after dropping caches, then removed; ROUNDS rounds
# (default 2), mount and local interleaved. As root, with a release build
# (`cargo build --release -p shoal`). Uses ports 17700-17732 and a scratch
# directory (default /tmp/shoal-small-files; it is removed first).
set -u
cd "$(dirname "$0")/../../.."
B=$(realpath "${SHOAL_BIN:-target/release/shoal}")
W=${1:-/tmp/shoal-small-files}
ROUNDS=${ROUNDS:-2}
. crates/shoal-fuse/bench/up.sh
up_mounted "$B" "$W" 17700

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
rate() { python3 -c "import sys; print(round(float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])), 1))" "$@"; }

worker='
import os, sys
op, d, w, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(n):
    path = "%s/f%s-%d" % (d, w, i)
    if op == "write":
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
    else:
        with open(path, "rb") as f:
            f.read()
'

# HARNESS OP DIR: four workers of 500 files each. (`wait` names the
# workers: a bare one would also wait for `shoal up`.)
work() {
  local harness=$1 op=$2 dir=$3 pids=() w
  for w in 0 1 2 3; do
    if [ "$harness" = python ]; then
      python3 -c "$worker" "$op" "$dir" "$w" 500 &
    elif [ "$op" = write ]; then
      ( for i in $(seq 0 499); do head -c 4096 /dev/urandom > "$dir/f$w-$i"; done ) &
    else
      ( for i in $(seq 0 499); do cat "$dir/f$w-$i" > /dev/null; done ) &
    fi
    pids+=($!)
  done
  wait "${pids[@]}"
}

for round in $(seq 1 "$ROUNDS"); do
  for harness in fork python; do
    for name in mount local; do
      if [ "$name" = mount ]; then dir=$W/mnt/small; else dir=$W/local/small; fi
      mkdir -p "$dir"
      t0=$(now); work "$harness" write "$dir"; sync; t1=$(now)
      wr=$(rate 2000 "$t0" "$t1")
      drop
      t0=$(now); work "$harness" read "$dir"; t1=$(now)
      r=$(rate 2000 "$t0" "$t1")
      rm -rf "$dir"
      echo "round $round $harness $name small-write $wr files/s small-read $r files/s"
    done
  done
done
