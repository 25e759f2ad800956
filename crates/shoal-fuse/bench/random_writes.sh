#!/usr/bin/env bash
# Random writers through the mount: what a piece of held ranges saves. On a
# release `shoal up --mount` cluster (3 meta nodes, 3 chunk servers,
# replication 2, TLS), runs
#   1. fsx 0.3.2 (crates/shoal-fuse/bench/fsx.toml) for OPS operations at
#      seed SEED;
#   2. sqlite3 (Python's module): a table of ROWS rows of 100 bytes, then TX
#      transactions that each update 10 random rows, in rollback-journal
#      mode, then again in WAL mode; the same on a local directory;
# and prints, for each, the time and the meta commits (`CommitWrite`) and
# chunk writes it cost (from the nodes' `shoal_rpc_requests_total`). As
# root. Uses ports 17700-17732 and a scratch directory (default
# /tmp/shoal-random-writes; removed first).
#
#   bash crates/shoal-fuse/bench/random_writes.sh [DIR]
#   (OPS=3000 SEED=97 ROWS=5000 TX=200 by default)
set -u
cd "$(dirname "$0")/../../.."
B=$(realpath "${SHOAL_BIN:-target/release/shoal}")
W=${1:-/tmp/shoal-random-writes}
OPS=${OPS:-3000}; SEED=${SEED:-97}; ROWS=${ROWS:-5000}; TX=${TX:-200}
. crates/shoal-fuse/bench/up.sh
up_mounted "$B" "$W" 17700

# "COMMITS CHUNK_WRITES" so far, summed over the nodes.
calls() {
  for p in 17720 17721 17722 17730 17731 17732; do curl -s "http://127.0.0.1:$p/metrics"; done |
    python3 -c '
import re, sys
text = sys.stdin.read()
def total(method):
    return sum(int(v) for v in re.findall(r"^shoal_rpc_requests_total\{[^}]*method=\"" + re.escape(method) + r"\"[^}]*\} (\d+)", text, re.M))
print(total("shoal.meta.v1.Namespace/CommitWrite"), total("shoal.chunk.v1.Chunk/Write"))'
}
now() { date +%s.%N; }
# NAME UNITS COUNT T0 T1 BEFORE AFTER
report() {
  python3 -c '
import sys
name, units, count, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
(c0, w0), (c1, w1) = (map(int, a.split()) for a in sys.argv[6:8])
print("%-28s %8.1f s  %8.1f %s/s  commits/%s %.2f  chunk writes/%s %.2f" % (
    name, t1 - t0, count / (t1 - t0), units, units, (c1 - c0) / count, units, (w1 - w0) / count))' "$@"
}

mkdir -p "$W/artifacts"
before=$(calls); t0=$(now)
fsx -f crates/shoal-fuse/bench/fsx.toml -N "$OPS" -S "$SEED" -P "$W/artifacts" "$W/mnt/fsx-file" >"$W/fsx.log" 2>&1
rc=$?; t1=$(now)
report "fsx ($(tail -1 "$W/fsx.log" | cut -c1-20)) rc $rc" op "$OPS" "$t0" "$t1" "$before" "$(calls)"

sqlite_tx() { # DIR MODE setup|run: "run" prints the seconds its transactions took
  /usr/bin/python3 - "$1/bench.db" "$2" "$3" "$ROWS" "$TX" <<'PY'
import os, random, sqlite3, sys, time
path, mode, phase, rows, tx = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if phase == "setup":
    for p in (path, path + "-journal", path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)
db = sqlite3.connect(path, isolation_level=None)
db.execute("pragma journal_mode=" + mode)
if phase == "setup":
    db.execute("create table t (id integer primary key, v blob)")
    db.execute("begin")
    db.executemany("insert into t values (?, ?)", ((i, os.urandom(100)) for i in range(rows)))
    db.execute("commit")
    sys.exit(0)
rng = random.Random(7)
t0 = time.monotonic()
for _ in range(tx):
    db.execute("begin")
    for _ in range(10):
        db.execute("update t set v = ? where id = ?", (os.urandom(100), rng.randrange(rows)))
    db.execute("commit")
print(time.monotonic() - t0)
db.close()
PY
}
for mode in delete wal; do
  sqlite_tx "$W/mnt" "$mode" setup
  before=$(calls)
  s=$(sqlite_tx "$W/mnt" "$mode" run)
  after=$(calls)
  report "sqlite $mode, mount" tx "$TX" 0 "$s" "$before" "$after"
  sqlite_tx "$W/local" "$mode" setup
  s=$(sqlite_tx "$W/local" "$mode" run)
  report "sqlite $mode, local" tx "$TX" 0 "$s" "0 0" "0 0"
done
