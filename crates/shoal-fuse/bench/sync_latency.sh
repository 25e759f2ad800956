#!/usr/bin/env bash
# Where one durable change through the mount spends its time. On a release
# `shoal up --mount` cluster (3 meta nodes, 3 chunk servers, replication 2,
# TLS), a 3 MiB file is made, then N times each (default 50):
#   pwrite+fsync      1,000 bytes at a scattered offset, then fsync;
#   pwrite+fdatasync  the same with fdatasync;
#   mmap write+msync  1,000 bytes through a shared mapping, then msync;
#   ftruncate         a shrink by a little more than a page (4,113 bytes);
#   fsync             with nothing held (what an idle fsync costs);
# and prints the mean time of each, with the calls it made per change and
# the mean time the serving node took to answer each call (the nodes'
# `shoal_rpc_requests_total` and `shoal_rpc_duration_seconds`: a chunk
# write counts on the primary, whose time includes the replica's, and on
# the replica; Raft's idle heartbeats, about 40 AppendEntries a second, are
# counted too, so that row is a little high). N at most 700. As root.
# Uses ports 17900-17932 and a scratch directory
# (default /tmp/shoal-sync-latency; removed first).
#
#   bash crates/shoal-fuse/bench/sync_latency.sh [DIR]   (N=50 by default)
set -u
cd "$(dirname "$0")/../../.."
B=$(realpath "${SHOAL_BIN:-target/release/shoal}")
W=${1:-/tmp/shoal-sync-latency}
. crates/shoal-fuse/bench/up.sh
up_mounted "$B" "$W" 17900
PORTS="17920 17921 17922 17930 17931 17932" N=${N:-50} /usr/bin/python3 - "$W/mnt" <<'PY'
import json, mmap, os, re, sys, time, urllib.request

def calls():
    """Summed over the nodes: {method: (answered, seconds)}."""
    total = {}
    for port in os.environ["PORTS"].split():
        text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port).read().decode()
        for name, slot in (("shoal_rpc_requests_total", 0), ("shoal_rpc_duration_seconds_sum", 1)):
            for method, value in re.findall(r'^' + name + r'\{[^}]*method="([^"]+)"[^}]*\} (\S+)', text, re.M):
                got = total.setdefault(method.rsplit(".", 1)[-1], [0.0, 0.0])
                got[slot] += float(value)
    return total

n = int(os.environ["N"])
size = 3 << 20
assert 0 < n <= 700, "N: 1 to 700 (the shrinks must fit in the 3 MiB file)"
fd = os.open(os.path.join(sys.argv[1], "f"), os.O_RDWR | os.O_CREAT)
os.ftruncate(fd, size)
os.fsync(fd)
spot = lambda i: (i * 7919 * 13) % (size - 1000)

def measure(name, change):
    before = calls()
    t0 = time.monotonic()
    for i in range(n):
        change(i)
    ms = (time.monotonic() - t0) * 1000 / n
    after = calls()
    print("%-18s %7.2f ms" % (name, ms))
    for method in sorted(after):
        count = after[method][0] - before.get(method, [0, 0])[0]
        if count > 0 and not method.endswith("/Heartbeat"):
            secs = after[method][1] - before.get(method, [0, 0])[1]
            print("    %-24s %5.2f per change, %6.2f ms each" % (method, count / n, secs * 1000 / count))

measure("pwrite+fsync", lambda i: (os.pwrite(fd, b"a" * 1000, spot(i)), os.fsync(fd)))
measure("pwrite+fdatasync", lambda i: (os.pwrite(fd, b"b" * 1000, spot(i)), os.fdatasync(fd)))
m = mmap.mmap(fd, size)
def mapped(i):
    m[spot(i):spot(i) + 1000] = b"c" * 1000
    m.flush()
measure("mmap write+msync", mapped)
m.close()
measure("ftruncate", lambda i: os.ftruncate(fd, size - 4113 * (i + 1)))
measure("fsync", lambda i: os.fsync(fd))
os.close(fd)
PY
