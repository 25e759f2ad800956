#!/usr/bin/env bash
# The mount's speed table (issue 11): the same workloads through a `shoal
# mount` of a release `shoal up` cluster (3 meta nodes, 3 chunk servers,
# replication 2, TLS) and on a local directory of the same disk, then the
# native client's `shoal bench` on the same cluster. As root (FUSE, and
# dropping the page cache); needs fio (`apt-get install fio`) and `cargo
# build --release -p shoal`. Uses ports 17600-17632 and a scratch directory
# (default /tmp/shoal-mount-bench; give a path of its own: it is removed
# first, and its data at the end).
#
# Workloads (as the issue gives them):
#   seq-write   fio, 1 GiB in 1 MiB blocks, one fsync at the end (MB/s)
#   seq-read    fio, that file after dropping caches (MB/s)
#   small-write 2,000 files of 4 KiB created, written and closed by 4 processes (files/s)
#   small-read  those files read back by 4 processes after dropping caches (files/s)
#   ls-cold     `ls -l` of that 2,000-entry directory after dropping caches (s)
#   ls-warm     the same again at once (s)
#   rm          `rm -rf` of those files (s)
#   rand-read   fio randread, 4 KiB, O_DIRECT, 4 jobs, iodepth 1, 256 MiB file, 20 s (IOPS)
set -u
cd "$(dirname "$0")/../../.."
B=$(realpath "${SHOAL_BIN:-target/release/shoal}")
W=${1:-/tmp/shoal-mount-bench}
. crates/shoal-fuse/bench/up.sh
up_mounted "$B" "$W" 17600
M=127.0.0.1:17600,127.0.0.1:17601,127.0.0.1:17602

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
fio_value() { # FILE FIELD: bw (MB/s) or iops, summed over jobs
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
kind = "write" if d["jobs"][0]["write"]["io_bytes"] else "read"
if sys.argv[2] == "bw":
    print(round(sum(j[kind]["bw_bytes"] for j in d["jobs"]) / 1e6, 1))
else:
    print(round(sum(j[kind]["iops"] for j in d["jobs"])))' "$1" "$2"
}
now() { date +%s.%N; }
rate() { python3 -c "import sys; print(round(float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])), 1))" "$@"; }
secs() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$@"; }

# Four writers of 500 files each (head -c from /dev/urandom, so every file
# is written and closed by its own process), then four readers.
# (`wait` names the workers: a bare one would also wait for `shoal up`.)
small_write() {
  local dir=$1 pids=()
  mkdir -p "$dir/small"
  for w in 0 1 2 3; do
    ( for i in $(seq 0 499); do head -c 4096 /dev/urandom > "$dir/small/f$w-$i"; done ) &
    pids+=($!)
  done
  wait "${pids[@]}"
}
small_read() {
  local dir=$1 pids=()
  for w in 0 1 2 3; do
    ( for i in $(seq 0 499); do cat "$dir/small/f$w-$i" > /dev/null; done ) &
    pids+=($!)
  done
  wait "${pids[@]}"
}

run_on() { # NAME DIR
  local name=$1 dir=$2 t0 t1
  fio --name=seq --directory="$dir" --filename=big --rw=write --bs=1M --size=1G --end_fsync=1 \
    --output-format=json --output="$W/$name-seqw.json" >/dev/null || exit 1
  echo "$name seq-write $(fio_value "$W/$name-seqw.json" bw) MB/s"
  drop
  fio --name=seq --directory="$dir" --filename=big --rw=read --bs=1M --size=1G \
    --output-format=json --output="$W/$name-seqr.json" >/dev/null || exit 1
  echo "$name seq-read $(fio_value "$W/$name-seqr.json" bw) MB/s"
  rm -f "$dir/big"
  t0=$(now); small_write "$dir"; sync; t1=$(now)
  echo "$name small-write $(rate 2000 "$t0" "$t1") files/s"
  drop
  t0=$(now); small_read "$dir"; t1=$(now)
  echo "$name small-read $(rate 2000 "$t0" "$t1") files/s"
  drop
  t0=$(now); ls -l "$dir/small" > /dev/null; t1=$(now)
  echo "$name ls-cold $(secs "$t0" "$t1") s"
  t0=$(now); ls -l "$dir/small" > /dev/null; t1=$(now)
  echo "$name ls-warm $(secs "$t0" "$t1") s"
  t0=$(now); rm -rf "$dir/small"; t1=$(now)
  echo "$name rm $(secs "$t0" "$t1") s"
  fio --name=rand --directory="$dir" --filename=rand --rw=randread --bs=4k --size=256M --direct=1 \
    --numjobs=4 --iodepth=1 --time_based --runtime=20 --group_reporting=0 \
    --output-format=json --output="$W/$name-rand.json" >/dev/null 2>"$W/$name-rand.err"
  if [ -s "$W/$name-rand.json" ]; then
    echo "$name rand-read $(fio_value "$W/$name-rand.json" iops) IOPS"
  else
    echo "$name rand-read failed: $(head -c 300 "$W/$name-rand.err")"
  fi
  rm -f "$dir/rand"
}

run_on mount "$W/mnt"
run_on local "$W/local"
summary='import json,sys; d=json.load(sys.stdin); print("native", d.get("workload"), round(d["ops_per_sec"], 1), "ops/s", round(d.get("mb_per_sec", 0), 1), "MB/s")'
"$B" --meta $M bench seq-write --size 1GiB --json | python3 -c "$summary"
"$B" --meta $M bench seq-read --size 1GiB --json | python3 -c "$summary"
"$B" --meta $M bench small-write --clients 4 --count 2000 --json | python3 -c "$summary"
"$B" --meta $M bench small-read --clients 4 --count 2000 --json | python3 -c "$summary"
"$B" --meta $M bench rand-read --clients 4 --count 20000 --json | python3 -c "$summary"
