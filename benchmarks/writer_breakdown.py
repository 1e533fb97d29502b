"""Where the writer's time goes, per row: a diagnostic script, not a pytest module.

Times each stage the writer runs for 100,000 entries, single-threaded, in one
process (CPU seconds, median of ``--repeat`` runs), then ``close()`` of a service
holding 100,000 pending entries, with the default settings and with redaction
and the hash chain off, so the stages can be checked against the whole::

    python benchmarks/writer_breakdown.py [--rows 100000] [--repeat 2]

``--batches N`` measures per batch of 52 rows instead (the writer's batch at
1,000 calls a second and a 50 ms flush interval): the hash chain, the store's
``write_batch`` and raw ``sqlite3`` writing the same rows in the same
transactions (``synchronous=FULL``), each with the context switches of the
whole process (``getrusage``: every hop into a thread and back is two)::

    python benchmarks/writer_breakdown.py --batches 200 [--repeat 3]

It reaches into private names (``RowFormatter``, ``Chainer``, the store's SQL),
so expect to adjust it when those move.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from _support import KWARGS, list_policies, started
from finops_audit import AuditService, audit_tool_sync
from finops_audit._chain import GENESIS, Chainer
from finops_audit._encoding import RowFormatter
from finops_audit.storage import sqlite as store_sql


def _cpu(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.process_time()
    result = fn()
    return result, time.process_time() - start


def _insert(path: Path, schema: str, sql: str, rows: list[Any], batch: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(schema)
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows[i : i + batch])
            conn.execute("COMMIT")
    finally:
        conn.close()


def _close_pending(folder: Path, n: int, **settings: Any) -> float:
    svc = started(
        AuditService(
            db_path=folder / f"close-{time.monotonic_ns()}.db",
            batch_size=n,
            queue_size=n,
            flush_interval=60,
            **settings,
        )
    )
    tool = audit_tool_sync(service=svc)(list_policies)
    for _ in range(n - 1):
        tool(**KWARGS)

    def finish() -> None:
        tool(**KWARGS)
        svc.close()

    return _cpu(finish)[1]


def run(n: int, folder: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    svc = AuditService(db_path=folder / "redactor.db")  # only for its redactor
    now = time.time_ns()
    raw = orjson.dumps(KWARGS)
    # The hand-off tuple as of schema v3: (tool, wall, elapsed, params, status, error, caller).
    entries = [
        ("list_policies", now + i * 7_000, 1_200, raw, "SUCCESS", None, None) for i in range(n)
    ]
    plain = RowFormatter(65_536)
    rows, out["format rows, redaction off"] = _cpu(lambda: plain.rows(entries))
    redacting = RowFormatter(65_536, svc.redactor)
    rows, out["format rows, default redaction"] = _cpu(lambda: redacting.rows(entries))
    linked, out["hash chain (Chainer.link)"] = _cpu(lambda: Chainer().link(1, GENESIS, rows)[0])
    svc.close()

    schema = store_sql._SCHEMA
    tables = schema.split("CREATE INDEX")[0]
    cols = "timestamp, tool_name, parameters, status, error_message, execution_time_ms"
    six = f"INSERT INTO audit_logs ({cols}) VALUES ({', '.join('?' * 6)})"
    rows6 = [r[1:7] for r in linked]
    for label, table_sql, sql, data in (
        ("executemany, rows as stored, 3 indexes", schema, store_sql._INSERT_CHAINED, linked),
        ("executemany, rows as stored, no index", tables, store_sql._INSERT_CHAINED, linked),
        ("executemany, 6 design-note columns, 3 indexes", schema, six, rows6),
        ("executemany, 6 design-note columns, no index", tables, six, rows6),
    ):
        path = folder / f"raw-{time.monotonic_ns()}.db"
        start = time.process_time()
        _insert(path, table_sql, sql, data, 1_000)
        out[label + " (1,000/txn)"] = time.process_time() - start
    out["close() with all pending, defaults"] = _close_pending(folder, n)
    out["close() with all pending, redact=False hash_chain=False"] = _close_pending(
        folder, n, redact=False, hash_chain=False
    )
    return out


BATCH = 52
GAP = 0.01  # idle time between batches, so the threads really sleep and wake


def _batch_rows(n: int) -> list[list[tuple[Any, ...]]]:
    raw = orjson.dumps(KWARGS)
    fmt = RowFormatter(65_536)
    now = time.time_ns()
    return [
        fmt.rows([("list_policies", now + i, 1_200, raw, "SUCCESS", None, None)] * BATCH)
        for i in range(n)
    ]


def _usage() -> tuple[float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), r.ru_nvcsw + r.ru_nivcsw


async def _raw_batches(path: Path, batches: list[list[tuple[Any, ...]]]) -> tuple[float, int]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(store_sql._SCHEMA)
        cpu0, sw0 = _usage()
        for rows in batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(store_sql._INSERT_BARE, [r[:6] for r in rows])
            conn.execute("COMMIT")
            await asyncio.sleep(GAP)
        cpu1, sw1 = _usage()
    finally:
        conn.close()
    return cpu1 - cpu0, sw1 - sw0


async def _store_batches(
    path: Path, batches: list[list[tuple[Any, ...]]], chained: bool
) -> tuple[float, int]:
    store = store_sql.SQLiteAuditStore(path, chainer=Chainer() if chained else None)
    await store.open()
    try:
        cpu0, sw0 = _usage()
        for rows in batches:
            await store.write_batch(rows)
            await asyncio.sleep(GAP)
        cpu1, sw1 = _usage()
    finally:
        await store.close()
    return cpu1 - cpu0, sw1 - sw0


def per_batch(n: int, folder: Path) -> dict[str, tuple[float, float]]:
    """µs of CPU and context switches per batch of :data:`BATCH` rows, by stage."""
    out: dict[str, tuple[float, float]] = {}
    batches = _batch_rows(n)
    chainer = Chainer()
    link = getattr(chainer, "link_split", None) or chainer.link
    _, cpu = _cpu(lambda: [link(1, GENESIS, rows) for rows in batches])
    out["hash chain (unkeyed)"] = (cpu / n * 1e6, 0.0)
    keyed = Chainer(b"k" * 32)
    link = getattr(keyed, "link_split", None) or keyed.link
    _, cpu = _cpu(lambda: [link(1, GENESIS, rows) for rows in batches])
    out["hash chain (AUDIT_HMAC_KEY)"] = (cpu / n * 1e6, 0.0)
    for label, job in (
        ("raw sqlite3: BEGIN, executemany, COMMIT", lambda p: _raw_batches(p, batches)),
        ("store.write_batch, hash_chain=False", lambda p: _store_batches(p, batches, False)),
        ("store.write_batch, chained (default)", lambda p: _store_batches(p, batches, True)),
    ):
        cpu, switches = asyncio.run(job(folder / f"batch-{time.monotonic_ns()}.db"))
        out[label] = (cpu / n * 1e6, switches / n)
    return out


def main_batches(n: int, repeat: int) -> None:
    runs: list[dict[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            runs.append(per_batch(n, Path(tmp)))
    print(
        f"| per batch of {BATCH} rows ({n} batches, median of {repeat}) | µs CPU | "
        "context switches |"
    )
    print("|---|---|---|")
    for key in runs[0]:
        cpu = statistics.median(r[key][0] for r in runs)
        switches = statistics.median(r[key][1] for r in runs)
        print(f"| {key} | {cpu:.0f} | {switches:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batches", type=int, default=0, help="measure per batch instead")
    args = parser.parse_args()
    if args.batches:
        main_batches(args.batches, args.repeat)
        return
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            runs.append(run(args.rows, Path(tmp)))
    print(f"| stage ({args.rows:,} rows, median of {args.repeat}) | CPU s | µs CPU per row |")
    print("|---|---|---|")
    for key in runs[0]:
        seconds = statistics.median(r[key] for r in runs)
        print(f"| {key} | {seconds:.2f} | {seconds / args.rows * 1e6:.1f} |")


if __name__ == "__main__":
    main()
