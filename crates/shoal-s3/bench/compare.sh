#!/usr/bin/env bash
# Native against S3 on small files, on one release `shoal up --s3` cluster:
# `shoal bench small-write/small-read --clients 4 --count 2000` and
# `s3_bench.py s3-put-small/s3-get-small --clients 4 --count 2000`,
# interleaved, ROUNDS times (default 2). Needs `cargo build --release -p
# shoal` and Debian's python3-boto3. Uses ports 17500-17590 and a scratch
# directory (default /tmp/shoal-s3-compare), removed first.
set -u
cd "$(dirname "$0")/../../.."
B=${SHOAL_BIN:-target/release/shoal}
W=${1:-/tmp/shoal-s3-compare}
ROUNDS=${ROUNDS:-2}
rm -rf "$W"; mkdir -p "$W/home"
export HOME=$W/home
SHOAL_S3_ACCESS_KEY=AK SHOAL_S3_SECRET_KEY=SK "$B" up --dir "$W/data" --base-port 17500 --s3 127.0.0.1:17590 >"$W/up.log" 2>&1 &
UP=$!
trap 'kill $UP 2>/dev/null; wait $UP 2>/dev/null' EXIT
for _ in $(seq 1 120); do grep -q "^S3:" "$W/up.log" && break; sleep 1; done
M=127.0.0.1:17500,127.0.0.1:17501,127.0.0.1:17502
summary='import json,sys; d=json.load(sys.stdin); print(d.get("workload"), round(d["ops_per_sec"], 1), "ops/s")'
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  "$B" --meta $M bench small-write --clients 4 --count 2000 --json | python3 -c "$summary"
  "$B" --meta $M bench small-read --clients 4 --count 2000 --json | python3 -c "$summary"
  /usr/bin/python3 crates/shoal-s3/bench/s3_bench.py http://127.0.0.1:17590 AK SK s3-put-small --clients 4 --count 2000 | tail -1
  /usr/bin/python3 crates/shoal-s3/bench/s3_bench.py http://127.0.0.1:17590 AK SK s3-get-small --clients 4 --count 2000 | tail -1
done
