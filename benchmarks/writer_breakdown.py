"""Where the writer's time goes, per row: a diagnostic script, not a pytest module.

Times each stage the writer runs for 100,000 entries, single-threaded, in one
process (CPU seconds, median of ``--repeat`` runs), then ``close()`` of a service
holding 100,000 pending entries, with the default settings and with redaction
and the hash chain off, so the stages can be checked against the whole::

    python benchmarks/writer_breakdown.py [--rows 100000] [--repeat 2]

It reaches into private names (``RowFormatter``, ``Chainer``, the store's SQL),
so expect to adjust it when those move.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
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
