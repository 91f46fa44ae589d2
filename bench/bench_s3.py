"""What does ``ObjectStore.put_stream`` cost against a bare boto3 ``upload_fileobj``?

Starts a private SeaweedFS (``weed server -s3``, as the tests do: ``tests/s3server.py``) with
a bucket with Object Lock, unless ``--endpoint`` names a store (then ``--bucket`` and the
AWS environment's credentials). In the same run, on the same random bytes, alternating the
order each round so that drift hurts no method more than another, it uploads, each with
GOVERNANCE retention for an hour (the same lock headers):

- (a) ``put_stream``: Hindsight's path (SHA-256 of every byte, checksum on every request,
  8 MiB parts, one in flight while the next is read; returns the version id);
- (b) ``put_stream`` with two parts in flight;
- (c) bare: boto3's ``upload_fileobj`` with its defaults (8 MiB parts, 10 threads, CRC32),
  the floor any boto3 program pays (it returns no version id).

Two sizes: short calls (1 MiB, a 30 s call as FLAC) for the commit latency, and long calls
(64 MiB, about half an hour) for the throughput. Prints, per method, the median, p90 and
worst seconds per upload and MB/s, then (a) and (b) against (c). Every upload of (a) and
(b) is checked to report the SHA-256 of its bytes, and the last long one of each method is
read back and compared. Run: ``.venv/bin/python bench/bench_s3.py [--rounds 5]
[--long-mib 64] [--short 20] [--quick]``; about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.s3server, when run as bench/bench_s3.py

import boto3  # type: ignore[import-untyped]  # noqa: E402
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]  # noqa: E402
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]  # noqa: E402

from hindsight.errors import HindsightError  # noqa: E402
from hindsight.objectstore import MIB, Credentials, ObjectStore  # noqa: E402

SHORT_MIB = 1
RETAIN = timedelta(hours=1)


class BenchError(Exception):
    """The bench could not measure: an upload failed or stored other bytes."""


@dataclass
class Method:
    label: str
    upload: Callable[[str, bytes], str | None]  # key, data -> version id (None: not known)
    short: list[float] = field(default_factory=list)
    long: list[float] = field(default_factory=list)
    last_long: tuple[str, str | None] | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="long uploads per method")
    parser.add_argument("--long-mib", type=int, default=64, help="size of a long call")
    parser.add_argument("--short", type=int, default=20, help="short uploads per method")
    parser.add_argument("--endpoint", help="an S3 endpoint to use instead of a private SeaweedFS")
    parser.add_argument("--bucket", help="with --endpoint: a bucket with Object Lock")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 16 MiB, 5 short")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.long_mib, args.short = 2, 16, 5
    if args.endpoint and not args.bucket:
        parser.error("--endpoint needs --bucket")
    return args


def bare_client(endpoint: str, credentials: Credentials | None) -> Any:
    keys: dict[str, str] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials.access_key,
            "aws_secret_access_key": credentials.secret_key,
        }
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}),
        **keys,
    )


def methods(endpoint: str, bucket: str, credentials: Credentials | None) -> list[Method]:
    def streamed(concurrency: int) -> Callable[[str, bytes], str | None]:
        store = ObjectStore(
            endpoint, bucket, "bench/", "GOVERNANCE", credentials, concurrency=concurrency
        )

        def upload(key: str, data: bytes) -> str | None:
            put = store.put_stream(key, io.BytesIO(data), datetime.now(UTC) + RETAIN)
            if put.sha256 != hashlib.sha256(data).hexdigest() or put.size != len(data):
                raise BenchError(f"put_stream of {key} reported another hash or size")
            return put.version_id

        return upload

    client = bare_client(endpoint, credentials)
    transfer = TransferConfig()

    def bare(key: str, data: bytes) -> str | None:
        extra = {
            "ObjectLockMode": "GOVERNANCE",
            "ObjectLockRetainUntilDate": datetime.now(UTC) + RETAIN,
        }
        client.upload_fileobj(
            io.BytesIO(data), bucket, f"bench/{key}", ExtraArgs=extra, Config=transfer
        )
        return None

    return [
        Method("(a) put_stream", streamed(1)),
        Method("(b) put_stream, 2 in flight", streamed(2)),
        Method("(c) bare upload_fileobj", bare),
    ]


def run_rounds(all_methods: list[Method], args: argparse.Namespace) -> None:
    short = os.urandom(SHORT_MIB * MIB)
    long = os.urandom(args.long_mib * MIB)
    # Warm up each method (connections, the bucket's first volume) outside the figures.
    for method in all_methods:
        method.upload("warm", short)
    for round_ in range(max(args.rounds, args.short)):
        order = all_methods if round_ % 2 == 0 else all_methods[::-1]
        for method in order:
            tag = method.label[1]
            if round_ < args.short:
                began = time.perf_counter()
                method.upload(f"short-{tag}-{round_}", short)
                method.short.append(time.perf_counter() - began)
            if round_ < args.rounds:
                key = f"long-{tag}-{round_}"
                began = time.perf_counter()
                version = method.upload(key, long)
                method.long.append(time.perf_counter() - began)
                method.last_long = (key, version)
    check(all_methods, long, args)


def check(all_methods: list[Method], long: bytes, args: argparse.Namespace) -> None:
    """The last long upload of each method reads back as the bytes sent."""
    endpoint, bucket, credentials = args.store
    client = bare_client(endpoint, credentials)
    want = hashlib.sha256(long).hexdigest()
    for method in all_methods:
        if method.last_long is None:
            continue
        key, version = method.last_long
        found = {"Bucket": bucket, "Key": f"bench/{key}"}
        if version is not None:
            found["VersionId"] = version
        body = client.get_object(**found)["Body"].read()
        if hashlib.sha256(body).hexdigest() != want:
            raise BenchError(f"{method.label}: {key} reads back other bytes")
    print(f"checked: the last long upload of each method reads back the same {len(long)} bytes")


def report(all_methods: list[Method], args: argparse.Namespace) -> None:
    def row(label: str, times: list[float], size: float) -> str:
        p90 = (
            statistics.quantiles(times, n=10, method="inclusive")[-1]
            if len(times) > 1
            else times[0]
        )
        median = statistics.median(times)
        return f"{label:<30}{median:>9.3f}{p90:>9.3f}{max(times):>9.3f}{size / median / 1e6:>10.1f}"

    head = f"{'':<30}{'median':>9}{'p90':>9}{'worst':>9}{'MB/s':>10}"
    print()
    print(f"short calls: {args.short} x {SHORT_MIB} MiB per method, seconds per upload")
    print(head)
    for method in all_methods:
        print(row(method.label, method.short, SHORT_MIB * MIB))
    print()
    print(f"long calls: {args.rounds} x {args.long_mib} MiB per method, seconds per upload")
    print(head)
    for method in all_methods:
        print(row(method.label, method.long, args.long_mib * MIB))
    bare = all_methods[-1]
    print()
    print(f"{'vs bare (time ratio)':<30}{'short':>9}{'long':>9}")
    for method in all_methods[:-1]:
        short = statistics.median(method.short) / statistics.median(bare.short)
        long = statistics.median(method.long) / statistics.median(bare.long)
        print(f"{method.label:<30}{short:>8.2f}x{long:>8.2f}x")


def run(args: argparse.Namespace) -> None:
    if args.endpoint:
        args.store = (args.endpoint, args.bucket, None)
        bench(args)
        return
    from tests.s3server import SeaweedServer, weed_available

    reason = weed_available()
    if reason is not None:
        raise BenchError(reason)
    with SeaweedServer() as server:
        print(f"SeaweedFS at {server.endpoint}, started in {server.started_in:.1f} s")
        host = Credentials(server.host.access_key, server.host.secret_key)
        args.store = (server.endpoint, server.new_bucket(), host)
        bench(args)


def bench(args: argparse.Namespace) -> None:
    endpoint, bucket, credentials = args.store
    all_methods = methods(endpoint, bucket, credentials)
    began = time.perf_counter()
    run_rounds(all_methods, args)
    print(f"uploaded in {time.perf_counter() - began:.1f} s on {os.cpu_count()} cores")
    report(all_methods, args)


def main() -> int:
    args = parse_args()
    try:
        run(args)
    except (BenchError, HindsightError, OSError) as exc:
        print(f"bench_s3: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
