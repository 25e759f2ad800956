#!/usr/bin/python3
"""S3 throughput of a running gateway, to set beside `shoal bench`.

Usage: s3_bench.py ENDPOINT ACCESS_KEY SECRET_KEY WORKLOAD [--clients N] [--count N] [--size BYTES]

Workloads (the same shapes as `shoal bench`):
  s3-put-large   one object of --size bytes (default 1 GiB) in one streamed PUT
  s3-get-large   read it back, streamed
  s3-put-small   --count objects (default 2,000) of 4 KiB, --clients threads (default 4)
  s3-get-small   read them back
Prints one JSON line: workload, ops, seconds, ops_per_sec, mb_per_sec.
"""

import argparse
import io
import json
import os
import sys
import time
import concurrent.futures

import boto3
from botocore.config import Config

p = argparse.ArgumentParser()
p.add_argument("endpoint")
p.add_argument("access_key")
p.add_argument("secret_key")
p.add_argument("workload")
p.add_argument("--clients", type=int, default=4)
p.add_argument("--count", type=int, default=2000)
p.add_argument("--size", type=int, default=1 << 30)
a = p.parse_args()

cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"},
             read_timeout=600, max_pool_connections=max(10, a.clients * 2))
S3 = boto3.client("s3", endpoint_url=a.endpoint, aws_access_key_id=a.access_key,
                  aws_secret_access_key=a.secret_key, region_name="us-east-1", config=cfg)
BUCKET = "bench"
try:
    S3.create_bucket(Bucket=BUCKET)
except S3.exceptions.BucketAlreadyOwnedByYou:
    pass


class Zeros(io.RawIOBase):
    """`n` bytes of a repeating pattern, produced as they are read (never whole in memory)."""

    def __init__(self, n):
        self.left = n
        self.block = os.urandom(8 << 20)

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left, len(self.block))
        b[:n] = self.block[:n]
        self.left -= n
        return n


def timed(fn, ops, nbytes):
    t = time.monotonic()
    fn()
    s = time.monotonic() - t
    print(json.dumps({"workload": a.workload, "ops": ops, "seconds": round(s, 3),
                      "ops_per_sec": round(ops / s, 1), "mb_per_sec": round(nbytes / s / 1e6, 1)}), flush=True)


if a.workload == "s3-put-large":
    # botocore wants a seekable body (it hashes the payload, then sends it),
    # so the object comes from a local file, written first and not timed.
    path = f"/tmp/s3_bench_{a.size}.bin"
    if not os.path.exists(path) or os.path.getsize(path) != a.size:
        with open(path, "wb") as f:
            src = Zeros(a.size)
            while chunk := src.read(8 << 20):
                f.write(chunk)
    with open(path, "rb") as f:
        timed(lambda: S3.put_object(Bucket=BUCKET, Key="large", Body=f), 1, a.size)
elif a.workload == "s3-get-large":
    def get():
        body = S3.get_object(Bucket=BUCKET, Key="large")["Body"]
        while body.read(8 << 20):
            pass
    timed(get, 1, S3.head_object(Bucket=BUCKET, Key="large")["ContentLength"])
elif a.workload in ("s3-put-small", "s3-get-small"):
    data = os.urandom(4096)
    keys = [f"small/{i:06}" for i in range(a.count)]

    def one(k):
        if a.workload == "s3-put-small":
            S3.put_object(Bucket=BUCKET, Key=k, Body=data)
        else:
            S3.get_object(Bucket=BUCKET, Key=k)["Body"].read()

    def run():
        with concurrent.futures.ThreadPoolExecutor(a.clients) as pool:
            list(pool.map(one, keys))
    timed(run, a.count, a.count * 4096)
else:
    sys.exit(f"unknown workload {a.workload}")
