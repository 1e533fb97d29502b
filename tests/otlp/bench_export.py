"""OTLP export throughput against a raw POST of the same pre-encoded requests.

Not collected by pytest (no ``test_`` prefix). Run from the project root:
``python -m tests.otlp.bench_export [rows]``. Prints medians of 5 runs, each
side measured in the same run against the same local receiver (whose Python
decoding bounds both), plus the encoder alone and the gzip trade-off.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.client
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from finops_audit import AuditService, audit_context
from finops_audit.forwarding.base import BufferedRow, ReplicaInfo
from finops_audit.forwarding.otlp import OtlpSink, encode_logs

from .receiver import OtlpReceiver
from .test_otlp_sink import GENESIS, tools, write_trail

REPLICA = ReplicaInfo("bench", "a" * 32, 0)


def median_seconds(run: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compress_all(bodies: list[bytes], level: int) -> list[bytes]:
    return [gzip.compress(b, compresslevel=level) for b in bodies]


def trail(count: int) -> list[BufferedRow]:
    def calls(svc: AuditService) -> None:
        get_costs, check_tags = tools(svc)
        with audit_context(user="alice", session_id="sess-1", request_id=1, team="finops"):
            for i in range(count):
                if i % 10 == 0:
                    with contextlib.suppress(ValueError):
                        check_tags(f"i-{i}")
                else:
                    get_costs(f"region-{i % 7}", days=i)

    return write_trail(Path(tempfile.mkdtemp()) / "bench.db", calls)


def main(count: int) -> None:
    rows = trail(count)
    batches = [rows[i : i + 1000] for i in range(0, count, 1000)]
    encode = median_seconds(lambda: [encode_logs(REPLICA, b).SerializeToString() for b in batches])
    bodies = [encode_logs(REPLICA, b).SerializeToString() for b in batches]
    plain = sum(map(len, bodies))
    print(f"rows: {count:,}; {plain / count:.0f} bytes a record on the wire (plain)")
    print(f"encode only: {count / encode:,.0f} rows/s ({encode / count * 1e6:.1f} µs a row)")
    for level in (1, 6):
        took = median_seconds(functools.partial(compress_all, bodies, level))
        packed = sum(len(gzip.compress(b, compresslevel=level)) for b in bodies)
        print(
            f"gzip level {level}: x{plain / packed:.1f} smaller, {took / count * 1e6:.1f} µs a row"
        )
    with OtlpReceiver() as receiver:

        def raw() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
            try:
                for body in bodies:
                    conn.request(
                        "POST",
                        "/v1/logs",
                        body=body,
                        headers={"Content-Type": "application/x-protobuf"},
                    )
                    answer = conn.getresponse()
                    answer.read()
                    assert answer.status == 200
            finally:
                conn.close()

        def export(**options: object) -> None:
            sink = OtlpSink(receiver.url, **options)  # type: ignore[arg-type]
            replica = ReplicaInfo("bench", secrets.token_hex(16), 0)
            try:
                for i in range(0, count, 5_000):  # the forwarder's default batch
                    sink.send(replica, rows[i : i + 5_000], GENESIS)
            finally:
                sink.close()

        t_raw = median_seconds(raw)
        t_sink = median_seconds(export)
        t_plain = median_seconds(lambda: export(gzip_min_bytes=None))
    print(f"raw POST of pre-encoded requests: {count / t_raw:,.0f} rows/s")
    for label, took in (("gzip > 64 KiB", t_sink), ("no gzip", t_plain)):
        print(f"OtlpSink.send ({label}): {count / took:,.0f} rows/s = {t_raw / took:.2f}x raw")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
