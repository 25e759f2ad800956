#!/usr/bin/python3
"""boto3 checks of Shoal's S3 gateway, run by the integration test t96.

Usage: s3_suite.py ENDPOINT ACCESS_KEY SECRET_KEY SCENARIO [ARGS...]

Scenarios:
  suite                    every operation, its errors, conditional requests,
                           a 2,000-key listing against a sorted model, a
                           100 MiB multipart upload and its ETag, range reads at
                           1 MiB chunk boundaries, presigned URLs, bad input
  get BUCKET KEY FILE      the object must equal FILE (and its ETag its MD5)
  put BUCKET KEY FILE      PUT FILE as the object
  upload BUCKET KEY        start a multipart upload with one part; print its id
  uploads BUCKET           print the ids of the bucket's multipart uploads

Every check raises on failure; the process exits non-zero with the traceback.
"""

import concurrent.futures
import hashlib
import os
import random
import socket
import sys
import time
import urllib.error
import urllib.request
import zlib
from datetime import datetime, timedelta, timezone

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import ClientError

MIB = 1 << 20
ENDPOINT, AK, SK, SCENARIO = sys.argv[1:5]
ARGS = sys.argv[5:]


def client(ak=AK, sk=SK, retries=6, read_timeout=20):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": retries, "mode": "standard"},
            connect_timeout=10,
            # Short, with retries, for a busy machine: a PUT retried after a
            # timeout writes the object again, which PUT allows.
            read_timeout=read_timeout,
        ),
    )


S3 = client()
# For calls that copy much before they answer (Complete copies the parts).
S3_LONG = client(read_timeout=300)


STARTED = time.monotonic()


def step(msg):
    print(f"--- {time.monotonic() - STARTED:7.1f}s {msg}", flush=True)


def md5(b):
    return hashlib.md5(b).hexdigest()


def expect_error(code, status, fn, *a, **kw):
    """fn must fail with S3 error `code` and HTTP `status`."""
    try:
        fn(*a, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert (got, got_status) == (code, status), f"expected {code}/{status}, got {got}/{got_status}: {e}"
        return e
    raise AssertionError(f"expected {code}, but the call succeeded")


def absent(bucket, key):
    try:
        S3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def all_keys(bucket):
    out = []
    for page in S3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def buckets_and_objects():
    step("buckets")
    names = [b["Name"] for b in S3.list_buckets()["Buckets"]]
    assert ".shoal-s3" not in names, names
    S3.create_bucket(Bucket="alpha")
    expect_error("BucketAlreadyOwnedByYou", 409, S3.create_bucket, Bucket="alpha")
    expect_error("InvalidBucketName", 400, S3.create_bucket, Bucket="Bad_Name")
    assert "alpha" in [b["Name"] for b in S3.list_buckets()["Buckets"]]
    S3.head_bucket(Bucket="alpha")
    expect_error("404", 404, S3.head_bucket, Bucket="nope-bucket")
    S3.get_bucket_location(Bucket="alpha")
    expect_error("NoSuchBucket", 404, S3.list_objects_v2, Bucket="nope-bucket")

    step("put, get, head with metadata")
    body = os.urandom(70_000)
    r = S3.put_object(Bucket="alpha", Key="docs/a.bin", Body=body, ContentType="application/x-test",
                      Metadata={"color": "blue", "Owner": "me"})
    assert r["ETag"] == f'"{md5(body)}"', r["ETag"]
    g = S3.get_object(Bucket="alpha", Key="docs/a.bin")
    assert g["Body"].read() == body
    assert g["ContentType"] == "application/x-test", g["ContentType"]
    assert g["Metadata"] == {"color": "blue", "owner": "me"}, g["Metadata"]
    assert g["ETag"] == f'"{md5(body)}"'
    h = S3.head_object(Bucket="alpha", Key="docs/a.bin")
    assert h["ContentLength"] == len(body) and h["ETag"] == g["ETag"] and h["Metadata"] == g["Metadata"]
    S3.put_object(Bucket="alpha", Key="empty", Body=b"")
    assert S3.get_object(Bucket="alpha", Key="empty")["Body"].read() == b""
    assert S3.head_object(Bucket="alpha", Key="empty")["ETag"] == f'"{md5(b"")}"'
    expect_error("NoSuchKey", 404, S3.get_object, Bucket="alpha", Key="missing")
    expect_error("NoSuchKey", 404, S3.get_object, Bucket="alpha", Key="docs")  # a prefix, not an object
    expect_error("NoSuchBucket", 404, S3.get_object, Bucket="nope-bucket", Key="x")
    expect_error("NoSuchBucket", 404, S3.put_object, Bucket="nope-bucket", Key="x", Body=b"x")

    step("Content-MD5")
    import base64
    good = base64.b64encode(hashlib.md5(b"hello").digest()).decode()
    S3.put_object(Bucket="alpha", Key="md5/ok", Body=b"hello", ContentMD5=good)
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    expect_error("BadDigest", 400, S3.put_object, Bucket="alpha", Key="md5/bad", Body=b"hello", ContentMD5=bad)
    assert absent("alpha", "md5/bad")

    step("keys that cannot be paths")
    for key in ["a//b", "a/../b", "./x", "x/.", "trailing/", "n" * 256 + "/x"]:
        step(f"key {key[:20]!r}")
        e = expect_error("InvalidArgument", 400, S3.put_object, Bucket="alpha", Key=key, Body=b"x")
        assert "path" in e.response["Error"]["Message"] or "component" in e.response["Error"]["Message"], e
    expect_error("KeyTooLongError", 400, S3.put_object, Bucket="alpha", Key="k/" * 600, Body=b"x")
    # One key cannot be both an object and a prefix followed by "/".
    S3.put_object(Bucket="alpha", Key="both/obj", Body=b"1")
    expect_error("InvalidArgument", 400, S3.put_object, Bucket="alpha", Key="both", Body=b"2")
    expect_error("InvalidArgument", 400, S3.put_object, Bucket="alpha", Key="both/obj/sub", Body=b"3")
    assert S3.get_object(Bucket="alpha", Key="both/obj")["Body"].read() == b"1"
    # Unicode and spaces are fine.
    S3.put_object(Bucket="alpha", Key="ünï cøde/ß & +.txt", Body=b"u")
    assert S3.get_object(Bucket="alpha", Key="ünï cøde/ß & +.txt")["Body"].read() == b"u"

    step("delete, delete objects, bucket not empty")
    expect_error("BucketNotEmpty", 409, S3.delete_bucket, Bucket="alpha")
    S3.delete_object(Bucket="alpha", Key="both/obj")
    S3.delete_object(Bucket="alpha", Key="both/obj")  # idempotent
    r = S3.delete_objects(Bucket="alpha", Delete={"Objects": [{"Key": "md5/ok"}, {"Key": "never"}, {"Key": "a//b"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["md5/ok", "never"], r
    assert [e["Key"] for e in r.get("Errors", [])] == ["a//b"], r
    keys = all_keys("alpha")
    assert not any(k.startswith(("both", "md5")) for k in keys), keys
    # Emptied "directories" are gone too: no stale common prefix.
    top = S3.list_objects_v2(Bucket="alpha", Delimiter="/")
    prefixes = [p["Prefix"] for p in top.get("CommonPrefixes", [])]
    assert "both/" not in prefixes and "md5/" not in prefixes, prefixes

    S3.create_bucket(Bucket="scratch")
    S3.put_object(Bucket="scratch", Key="x", Body=b"x")
    expect_error("BucketNotEmpty", 409, S3.delete_bucket, Bucket="scratch")
    S3.delete_object(Bucket="scratch", Key="x")
    S3.delete_bucket(Bucket="scratch")
    expect_error("404", 404, S3.head_bucket, Bucket="scratch")


def ranges_and_conditions():
    step("ranges at 1 MiB chunk boundaries")
    body = os.urandom(3 * MIB + 17)
    S3.put_object(Bucket="alpha", Key="big/ranged", Body=body)
    n = len(body)
    for spec, want in [
        ("bytes=0-0", body[0:1]),
        ("bytes=1048575-1048576", body[MIB - 1:MIB + 1]),
        ("bytes=1048576-2097151", body[MIB:2 * MIB]),
        ("bytes=1048000-3146000", body[1048000:3146001]),
        ("bytes=3145728-", body[3 * MIB:]),
        ("bytes=-5", body[-5:]),
        ("bytes=0-", body),
        (f"bytes={n - 1}-{n + 100}", body[n - 1:]),
    ]:
        g = S3.get_object(Bucket="alpha", Key="big/ranged", Range=spec)
        got = g["Body"].read()
        assert got == want, f"{spec}: {len(got)} bytes, wanted {len(want)}"
        assert g["ResponseMetadata"]["HTTPStatusCode"] == 206, spec
        assert g["ContentRange"].endswith(f"/{n}"), g["ContentRange"]
    expect_error("InvalidRange", 416, S3.get_object, Bucket="alpha", Key="big/ranged", Range=f"bytes={n}-")

    step("conditional requests")
    etag = S3.head_object(Bucket="alpha", Key="big/ranged")["ETag"]
    assert etag == f'"{md5(body)}"'
    S3.get_object(Bucket="alpha", Key="big/ranged", IfMatch=etag)
    expect_error("PreconditionFailed", 412, S3.get_object, Bucket="alpha", Key="big/ranged", IfMatch='"0000"')
    expect_error("304", 304, S3.get_object, Bucket="alpha", Key="big/ranged", IfNoneMatch=etag)
    S3.get_object(Bucket="alpha", Key="big/ranged", IfNoneMatch='"0000"')
    future = datetime.now(timezone.utc) + timedelta(days=1)
    past = datetime.now(timezone.utc) - timedelta(days=1)
    expect_error("304", 304, S3.get_object, Bucket="alpha", Key="big/ranged", IfModifiedSince=future)
    S3.get_object(Bucket="alpha", Key="big/ranged", IfModifiedSince=past)
    expect_error("PreconditionFailed", 412, S3.get_object, Bucket="alpha", Key="big/ranged", IfUnmodifiedSince=past)
    S3.get_object(Bucket="alpha", Key="big/ranged", IfUnmodifiedSince=future)
    expect_error("412", 412, S3.head_object, Bucket="alpha", Key="big/ranged", IfMatch='"0000"')

    step("copy, with metadata kept and replaced")
    S3.put_object(Bucket="alpha", Key="src", Body=b"copy me", ContentType="text/plain", Metadata={"k": "v"})
    r = S3.copy_object(Bucket="alpha", Key="copies/kept", CopySource={"Bucket": "alpha", "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == f'"{md5(b"copy me")}"'
    h = S3.head_object(Bucket="alpha", Key="copies/kept")
    assert h["Metadata"] == {"k": "v"} and h["ContentType"] == "text/plain", h
    S3.copy_object(Bucket="alpha", Key="copies/replaced", CopySource={"Bucket": "alpha", "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"new": "1"}, ContentType="text/x-new")
    h = S3.head_object(Bucket="alpha", Key="copies/replaced")
    assert h["Metadata"] == {"new": "1"} and h["ContentType"] == "text/x-new", h
    assert S3.get_object(Bucket="alpha", Key="copies/replaced")["Body"].read() == b"copy me"
    # Onto itself: metadata only.
    S3.copy_object(Bucket="alpha", Key="src", CopySource={"Bucket": "alpha", "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"self": "yes"})
    h = S3.head_object(Bucket="alpha", Key="src")
    assert h["Metadata"] == {"self": "yes"} and h["ETag"] == f'"{md5(b"copy me")}"', h
    expect_error("InvalidRequest", 400, S3.copy_object, Bucket="alpha", Key="src",
                 CopySource={"Bucket": "alpha", "Key": "src"})
    expect_error("PreconditionFailed", 412, S3.copy_object, Bucket="alpha", Key="copies/cond",
                 CopySource={"Bucket": "alpha", "Key": "src"}, CopySourceIfMatch='"0000"')
    assert absent("alpha", "copies/cond")
    expect_error("NoSuchKey", 404, S3.copy_object, Bucket="alpha", Key="copies/x",
                 CopySource={"Bucket": "alpha", "Key": "missing"})


def model_page(keys, prefix, delimiter):
    """S3's answer from a sorted key list: (contents, common prefixes)."""
    contents, prefixes = [], []
    for k in sorted(keys, key=lambda s: s.encode()):
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix):]
        if delimiter and delimiter in rest:
            cp = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if not prefixes or prefixes[-1] != cp:
                prefixes.append(cp)
        else:
            contents.append(k)
    return contents, prefixes


def listing():
    step("2,000 keys")
    S3.create_bucket(Bucket="many")
    rnd = random.Random(96)
    keys = set()
    words = ["a", "a-b", "a0", "b", "é", "z z", "Z", "dir"]
    while len(keys) < 2000:
        depth = rnd.randint(0, 3)
        parts = [rnd.choice(words) for _ in range(depth)] + [f"k{rnd.randint(0, 99999):05}"]
        keys.add("/".join(parts))
    # A key may not be both an object and a prefix; drop the few that collide.
    keys = {k for k in keys if not any(o.startswith(k + "/") for o in keys)}
    keys = sorted(keys)
    # Every tenth object holds its key (for the sizes and ETags below); the
    # others are empty, which is quicker to write.
    def body(k):
        return k.encode() if zlib.crc32(k.encode()) % 10 == 0 else b""

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: S3.put_object(Bucket="many", Key=k, Body=body(k)), keys))
    byte_sorted = sorted(keys, key=lambda s: s.encode())

    step("listing against the sorted model")
    for prefix in ["", "a", "a/", "a-b/", "é/", "dir/a/", "nothing/"]:
        for delimiter in [None, "/", "-"]:
            # Small pages for some narrower listings, so pagination is
            # exercised without listing 2,000 keys seven at a time.
            small = 7 if prefix in ("a-b/", "é/", "dir/a/") or (not prefix and delimiter == "/") else 300
            for page_size in [1000, small]:
                want_c, want_p = model_page(keys, prefix, delimiter)
                kw = {"Bucket": "many", "Prefix": prefix, "PaginationConfig": {"PageSize": page_size}}
                if delimiter:
                    kw["Delimiter"] = delimiter
                for api in ["list_objects_v2", "list_objects"]:
                    got_c, got_p, pages = [], [], 0
                    for page in S3.get_paginator(api).paginate(**kw):
                        pages += 1
                        got_c += [o["Key"] for o in page.get("Contents", [])]
                        got_p += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
                        n = len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
                        assert n <= page_size, (api, n)
                    assert got_c == want_c, (api, prefix, delimiter, page_size, got_c[:5], want_c[:5])
                    assert got_p == want_p, (api, prefix, delimiter, page_size, got_p, want_p)
    # Keys come back in UTF-8 byte order, with sizes and ETags.
    r = S3.list_objects_v2(Bucket="many", MaxKeys=1000)
    assert [o["Key"] for o in r["Contents"]] == byte_sorted[:1000]
    assert r["IsTruncated"] and r["KeyCount"] == 1000
    assert all(o["ETag"] == f'"{md5(body(o["Key"]))}"' and o["Size"] == len(body(o["Key"])) for o in r["Contents"])
    r = S3.list_objects_v2(Bucket="many", StartAfter=byte_sorted[1500])
    assert [o["Key"] for o in r["Contents"]] == byte_sorted[1501:]
    r = S3.list_objects_v2(Bucket="many", MaxKeys=0)
    assert r.get("KeyCount", 0) == 0
    expect_error("InvalidArgument", 400, S3.list_objects_v2, Bucket="many", ContinuationToken="not-a-token")

    step("list object versions (unversioned)")
    r = S3.list_object_versions(Bucket="many", Prefix="a/", MaxKeys=5)
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in r["Versions"]), r["Versions"]
    assert [v["Key"] for v in r["Versions"]] == model_page(keys, "a/", None)[0][:5]


def multipart():
    step("multipart: 100 MiB in 5 MiB parts")
    S3.create_bucket(Bucket="mpu")
    up = S3.create_multipart_upload(Bucket="mpu", Key="big/object", ContentType="application/x-big",
                                    Metadata={"made": "multipart"})
    uid = up["UploadId"]
    parts, digests, whole = [], [], hashlib.md5()
    rnd = random.Random(5)
    for n in range(1, 21):
        data = rnd.randbytes(5 * MIB)
        whole.update(data)
        r = S3.upload_part(Bucket="mpu", Key="big/object", UploadId=uid, PartNumber=n, Body=data)
        assert r["ETag"] == f'"{md5(data)}"'
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
        digests.append(hashlib.md5(data).digest())
    lp = S3.list_parts(Bucket="mpu", Key="big/object", UploadId=uid, MaxParts=7)
    assert [p["PartNumber"] for p in lp["Parts"]] == list(range(1, 8)) and lp["IsTruncated"]
    lp = S3.list_parts(Bucket="mpu", Key="big/object", UploadId=uid, PartNumberMarker=7)
    assert [p["PartNumber"] for p in lp["Parts"]] == list(range(8, 21))
    ups = S3.list_multipart_uploads(Bucket="mpu")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in ups] == [("big/object", uid)], ups
    assert all_keys("mpu") == [], "staged parts are not objects"

    step("multipart: refusals")
    expect_error("InvalidPart", 400, S3.complete_multipart_upload, Bucket="mpu", Key="big/object", UploadId=uid,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]})
    expect_error("InvalidPartOrder", 400, S3.complete_multipart_upload, Bucket="mpu", Key="big/object",
                 UploadId=uid, MultipartUpload={"Parts": [parts[1], parts[0]]})
    small = S3.create_multipart_upload(Bucket="mpu", Key="small")["UploadId"]
    e1 = S3.upload_part(Bucket="mpu", Key="small", UploadId=small, PartNumber=1, Body=b"tiny")["ETag"]
    e2 = S3.upload_part(Bucket="mpu", Key="small", UploadId=small, PartNumber=2, Body=b"tail")["ETag"]
    expect_error("EntityTooSmall", 400, S3.complete_multipart_upload, Bucket="mpu", Key="small", UploadId=small,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    S3.abort_multipart_upload(Bucket="mpu", Key="small", UploadId=small)
    expect_error("NoSuchUpload", 404, S3.list_parts, Bucket="mpu", Key="small", UploadId=small)
    expect_error("NoSuchUpload", 404, S3.upload_part, Bucket="mpu", Key="small", UploadId=small, PartNumber=1,
                 Body=b"x")
    assert absent("mpu", "small")

    step("multipart: complete and its ETag")
    r = S3_LONG.complete_multipart_upload(Bucket="mpu", Key="big/object", UploadId=uid,
                                     MultipartUpload={"Parts": parts})
    want = f'"{hashlib.md5(b"".join(digests)).hexdigest()}-20"'
    assert r["ETag"] == want, (r["ETag"], want)
    h = S3.head_object(Bucket="mpu", Key="big/object")
    assert h["ETag"] == want and h["ContentLength"] == 100 * MIB, h
    assert h["Metadata"] == {"made": "multipart"} and h["ContentType"] == "application/x-big", h
    got = hashlib.md5()
    g = S3.get_object(Bucket="mpu", Key="big/object")["Body"]
    for piece in iter(lambda: g.read(MIB), b""):
        got.update(piece)
    assert got.hexdigest() == whole.hexdigest()
    assert S3.list_multipart_uploads(Bucket="mpu").get("Uploads", []) == []
    expect_error("NoSuchUpload", 404, S3.list_parts, Bucket="mpu", Key="big/object", UploadId=uid)

    step("multipart: upload part copy")
    cp = S3.create_multipart_upload(Bucket="mpu", Key="copied")["UploadId"]
    r1 = S3.upload_part_copy(Bucket="mpu", Key="copied", UploadId=cp, PartNumber=1,
                             CopySource={"Bucket": "mpu", "Key": "big/object"}, CopySourceRange=f"bytes=0-{5 * MIB - 1}")
    r2 = S3.upload_part_copy(Bucket="mpu", Key="copied", UploadId=cp, PartNumber=2,
                             CopySource={"Bucket": "mpu", "Key": "big/object"},
                             CopySourceRange=f"bytes={99 * MIB}-{100 * MIB - 1}")
    S3_LONG.complete_multipart_upload(Bucket="mpu", Key="copied", UploadId=cp, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
    c = S3.get_object(Bucket="mpu", Key="copied")["Body"].read()
    full = S3.get_object(Bucket="mpu", Key="big/object", Range=f"bytes=0-{5 * MIB - 1}")["Body"].read()
    tail = S3.get_object(Bucket="mpu", Key="big/object", Range=f"bytes={99 * MIB}-")["Body"].read()
    assert c == full + tail


def presigned():
    step("presigned GET and PUT")
    url = S3.generate_presigned_url("put_object", Params={"Bucket": "alpha", "Key": "presigned/up"}, ExpiresIn=300)
    req = urllib.request.Request(url, data=b"via presigned put", method="PUT")
    assert urllib.request.urlopen(req).status == 200
    url = S3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "presigned/up"}, ExpiresIn=300)
    assert urllib.request.urlopen(url).read() == b"via presigned put"
    expired = S3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "presigned/up"}, ExpiresIn=1)
    expired_put = S3.generate_presigned_url("put_object", Params={"Bucket": "alpha", "Key": "presigned/late"},
                                            ExpiresIn=1)
    time.sleep(2.5)
    for u, method, data in [(expired, "GET", None), (expired_put, "PUT", b"late")]:
        try:
            urllib.request.urlopen(urllib.request.Request(u, data=data, method=method))
            raise AssertionError("an expired presigned URL was served")
        except urllib.error.HTTPError as e:
            assert e.code == 403 and b"AccessDenied" in e.read(), e.code
    assert absent("alpha", "presigned/late")


def raw(data, shutdown=True, timeout=30):
    """Sends bytes to the gateway's port; returns what comes back before it closes."""
    host, port = ENDPOINT.split("//")[1].rstrip("/").split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.sendall(data)
    if shutdown:
        s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return out


def bad_input():
    step("wrong secret, unknown key: refused, nothing changed")
    wrong = client(sk=SK + "x", retries=1)
    expect_error("SignatureDoesNotMatch", 403, wrong.put_object, Bucket="alpha", Key="bad/secret", Body=b"x")
    expect_error("SignatureDoesNotMatch", 403, wrong.delete_object, Bucket="alpha", Key="docs/a.bin")
    expect_error("SignatureDoesNotMatch", 403, wrong.create_bucket, Bucket="by-wrong-secret")
    unknown = client(ak="NOSUCHKEY", retries=1)
    expect_error("InvalidAccessKeyId", 403, unknown.get_object, Bucket="alpha", Key="docs/a.bin")
    assert absent("alpha", "bad/secret")
    assert S3.head_object(Bucket="alpha", Key="docs/a.bin")["ContentLength"] == 70_000
    assert "by-wrong-secret" not in [b["Name"] for b in S3.list_buckets()["Buckets"]]

    step("a body shorter than its Content-Length")
    creds = botocore.credentials.Credentials(AK, SK)
    url = f"{ENDPOINT}/alpha/truncated"
    req = AWSRequest(method="PUT", url=url, data=b"",
                     headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": "100000"})
    SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    host = ENDPOINT.split("//")[1].rstrip("/")
    head = f"PUT /alpha/truncated HTTP/1.1\r\nHost: {host}\r\n"
    for k, v in req.headers.items():
        if k.lower() != "host":
            head += f"{k}: {v}\r\n"
    reply = raw(head.encode() + b"\r\n" + os.urandom(40_000))
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert absent("alpha", "truncated")

    step("garbage on the port")
    for junk in [os.urandom(3000), b"GET\r\n\r\n", b"\x16\x03\x01\x02\x00" + os.urandom(512), b"PUT /alpha/x HTTP/1.1\r\nContent-Length: zz\r\n\r\n"]:
        reply = raw(junk)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:200]
    # Still serving.
    assert S3.head_object(Bucket="alpha", Key="docs/a.bin")["ContentLength"] == 70_000


def scenario_get(bucket, key, path):
    want = open(path, "rb").read()
    g = S3.get_object(Bucket=bucket, Key=key)
    assert g["Body"].read() == want, "content differs"
    assert g["ETag"] == f'"{md5(want)}"', (g["ETag"], md5(want))
    # Listing shows the same ETag.
    r = S3.list_objects_v2(Bucket=bucket, Prefix=key)
    assert r["Contents"][0]["ETag"] == g["ETag"], r["Contents"]


def main():
    if SCENARIO == "suite":
        buckets_and_objects()
        ranges_and_conditions()
        listing()
        multipart()
        presigned()
        bad_input()
    elif SCENARIO == "get":
        scenario_get(*ARGS)
    elif SCENARIO == "put":
        S3.put_object(Bucket=ARGS[0], Key=ARGS[1], Body=open(ARGS[2], "rb").read())
    elif SCENARIO == "put-refused":
        # This key's identity is refused by the cluster: 503, once.
        once = client(retries=1)
        expect_error("ServiceUnavailable", 503, once.put_object, Bucket=ARGS[0], Key=ARGS[1], Body=b"refused")
    elif SCENARIO == "absent":
        assert absent(ARGS[0], ARGS[1]), f"{ARGS[0]}/{ARGS[1]} exists"
    elif SCENARIO == "upload":
        uid = S3.create_multipart_upload(Bucket=ARGS[0], Key=ARGS[1])["UploadId"]
        S3.upload_part(Bucket=ARGS[0], Key=ARGS[1], UploadId=uid, PartNumber=1, Body=b"abandoned")
        print(uid)
    elif SCENARIO == "uploads":
        for u in S3.list_multipart_uploads(Bucket=ARGS[0]).get("Uploads", []):
            print(u["UploadId"])
    else:
        raise SystemExit(f"unknown scenario {SCENARIO}")
    print("OK", flush=True)


if __name__ == "__main__":
    main()
