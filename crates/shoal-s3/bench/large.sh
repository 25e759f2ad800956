#!/usr/bin/env bash
# Native against S3 on one 1 GiB object, on one release `shoal up --s3`
# cluster: `shoal bench seq-write --size 1GiB` and `seq-read`, then the same
# bytes PUT and GET through the gateway by curl (`--aws-sigv4`, one streamed
# request each, payload unsigned, so the client is not the bottleneck: boto3
# hashes the body in Python first), interleaved ROUNDS times (default 3).
# Prints one line per measurement: workload and MB/s (10^6 bytes per second).
# Needs `cargo build --release -p shoal` and curl 7.75 or later. Uses ports
# 17500-17590, /dev/shm/shoal-s3-large (1 GiB, removed at the end) and a
# scratch directory (default /tmp/shoal-s3-large), removed first.
set -u
cd "$(dirname "$0")/../../.."
B=$(realpath "${SHOAL_BIN:-target/release/shoal}")
W=${1:-/tmp/shoal-s3-large}
ROUNDS=${ROUNDS:-3}
SRC=/dev/shm/shoal-s3-large
rm -rf "$W"; mkdir -p "$W/home"
export HOME=$W/home
[ -s "$SRC" ] || head -c 1073741824 /dev/urandom >"$SRC"
SHOAL_S3_ACCESS_KEY=AK SHOAL_S3_SECRET_KEY=SK "$B" up --dir "$W/data" --base-port 17500 --s3 127.0.0.1:17590 >"$W/up.log" 2>&1 &
UP=$!
trap 'kill $UP 2>/dev/null; wait $UP 2>/dev/null; rm -f "$SRC"' EXIT
for _ in $(seq 1 120); do grep -q "^S3:" "$W/up.log" && break; sleep 1; done
grep -q "^S3:" "$W/up.log" || { echo "the cluster did not come up:"; cat "$W/up.log"; exit 1; }
M=127.0.0.1:17500,127.0.0.1:17501,127.0.0.1:17502
E=http://127.0.0.1:17590
S3=(--aws-sigv4 aws:amz:us-east-1:s3 --user AK:SK -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -sS --fail)
summary='import json,sys; d=json.load(sys.stdin); print(d["workload"], round(d["mb_per_sec"], 1), "MB/s")'
curl "${S3[@]}" -X PUT "$E/bench" -o /dev/null
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  "$B" --meta $M bench seq-write --size 1GiB --json | python3 -c "$summary"
  curl "${S3[@]}" -T "$SRC" "$E/bench/big" -o /dev/null -w 's3-put-large %{speed_upload}\n' | awk '{printf "%s %.1f MB/s\n", $1, $2/1e6}'
  "$B" --meta $M bench seq-read --size 1GiB --json | python3 -c "$summary"
  curl "${S3[@]}" "$E/bench/big" -o /dev/null -w 's3-get-large %{speed_download}\n' | awk '{printf "%s %.1f MB/s\n", $1, $2/1e6}'
  curl "${S3[@]}" -X DELETE "$E/bench/big" -o /dev/null
done
