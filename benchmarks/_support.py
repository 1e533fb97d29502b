"""Workload shared by the benchmark modules: the tool bodies, their arguments, raw rows.

Every benchmark compares an audited call with the same call made without
auditing, in the same run, so the tools here do next to nothing: what is
measured is the audit layer, not the tool.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from finops_audit import AuditService, audit_tool_sync
from finops_audit.storage import sqlite as _store
from finops_audit.storage.sqlite import _SCHEMA, SCHEMA_VERSION

try:  # schema v2 stores an explicit id and a hash chained to the previous row
    from finops_audit._chain import GENESIS, Chainer
except ImportError:  # pragma: no cover - an older tree without the chain
    Chainer = None  # type: ignore[assignment,misc]
    GENESIS = ""

#: The INSERT the writer runs, so raw baselines write rows of the very same shape:
#: the design note's six columns, then any columns later schemas added (caller
#: context, empty for these tools), then, with the hash chain, an id and a hash.
_INSERT_ROW: str = getattr(_store, "_INSERT_ROW", None) or _store._INSERT
_INSERT_CHAINED: str | None = getattr(_store, "_INSERT_CHAINED", None)
CHAINED = _INSERT_CHAINED is not None and Chainer is not None
INSERT: str = _INSERT_CHAINED if CHAINED and _INSERT_CHAINED else _INSERT_ROW
ROW_WIDTH = _INSERT_ROW.count("?")

#: The keyword arguments of a typical MCP tool call (SDKs pass keywords only).
KWARGS: dict[str, Any] = {
    "resource_types": ["ec2:instance", "s3:bucket", "rds:db"],
    "filters": {"environment": "prod", "team": "platform"},
    "severity": "high",
}

#: Calls per round in the "sustained load" benchmarks.
BURST = 2_000


async def check_tag_compliance(
    resource_types: list[str], filters: dict[str, str] | None = None, severity: str = "all"
) -> int:
    return len(resource_types)


def list_policies(
    resource_types: list[str], filters: dict[str, str] | None = None, severity: str = "all"
) -> int:
    return len(resource_types)


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends to completion, without an event loop.

    An audited call whose queue has room never suspends, so one ``send`` runs
    the whole wrapper: this times exactly what a loop step would run for the
    call, without the loop's own overhead (tens of µs per ``run_until_complete``).
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the benchmarked coroutine suspended; it must not")


def sync_burst(fn: Callable[..., Any], n: int = BURST) -> Callable[[], None]:
    kw = KWARGS

    def burst() -> None:
        for _ in range(n):
            fn(**kw)

    return burst


def async_burst(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., Coroutine[Any, Any, Any]], n: int = BURST
) -> Callable[[], None]:
    """``n`` awaited calls inside one task on a real event loop."""
    kw = KWARGS

    async def many() -> None:
        for _ in range(n):
            await fn(**kw)

    def burst() -> None:
        loop.run_until_complete(many())

    return burst


def started(svc: AuditService) -> AuditService:
    """Start the writer and open the database outside any timed region (one row written)."""
    audit_tool_sync(name="warm_up", service=svc)(list_policies)(**KWARGS)
    svc.flush()
    return svc


# ---------------------------------------------------------------------- raw SQLite


def open_raw(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A plain ``sqlite3`` connection on our schema, set up as the service sets up its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return conn


def insert_batches(conn: sqlite3.Connection, rows: list[Any], batch: int = 1_000) -> None:
    """One ``BEGIN IMMEDIATE``, one ``executemany`` and one ``COMMIT`` per ``batch`` rows."""
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows[i : i + batch])
        conn.execute("COMMIT")


def iso(us: int) -> str:
    """The stored timestamp text of ``us`` microseconds since the epoch (service format)."""
    second, micro = divmod(us, 1_000_000)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{head}.{micro:06d}+00:00"


class RowLinker:
    """Turns 6-column rows into what the writer stores (extra columns, id and hash)."""

    def __init__(self) -> None:
        self.next_id = 1
        self.prev = GENESIS
        self._chainer = Chainer() if CHAINED else None

    def __call__(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if ROW_WIDTH > 6:
            pad = (None,) * (ROW_WIDTH - 6)
            rows = [(*row, *pad) for row in rows]
        if self._chainer is None:
            return rows
        linked, self.prev = self._chainer.link(self.next_id, self.prev, rows)
        self.next_id += len(rows)
        return linked


def service_like_rows(n: int, tool_name: str = "list_policies") -> list[tuple[Any, ...]]:
    """``n`` rows shaped exactly like the ones the writer stores for the benchmark tools.

    Built (ids and hashes included) before any timing: a raw baseline is the
    ceiling of the insert alone.
    """
    params = orjson.dumps(KWARGS).decode()
    start = int(datetime.now(timezone.utc).timestamp() * 1_000_000)
    rows = [(iso(start + i * 7), tool_name, params, "SUCCESS", None, 0.0012) for i in range(n)]
    return RowLinker()(rows)


def settings_info(svc: AuditService) -> dict[str, Any]:
    """The settings that shape the write path, for ``extra_info``."""
    names = ("batch_size", "flush_interval", "queue_size", "synchronous", "redact", "hash_chain")
    return {f"setting_{k}": getattr(svc.settings, k) for k in names if hasattr(svc.settings, k)}


def count_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0])
    finally:
        conn.close()


def chunks(it: Iterator[Any], size: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for item in it:
        buf.append(item)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


# ---------------------------------------------------------------------- the 1M-row trail

#: Ten tools with a skewed (roughly Zipf) mix; the last is the rare one (0.1%).
TOOL_MIX: dict[str, float] = {
    "get_cost_breakdown": 30.0,
    "check_tag_compliance": 20.0,
    "list_idle_resources": 14.0,
    "get_budget_status": 10.0,
    "forecast_spend": 8.0,
    "rightsize_recommendations": 7.0,
    "list_untagged_resources": 5.0,
    "detect_cost_anomalies": 3.9,
    "get_savings_plan_coverage": 2.0,
    "export_cost_report": 0.1,
}
COMMON_TOOL = "get_cost_breakdown"
RARE_TOOL = "export_cost_report"
FAILURE_RATE = 0.05
ERRORS = (
    "ValueError: unknown region 'eu-north-9'",
    "PermissionError: access denied to account 123456789012",
    "TimeoutError: cost explorer did not answer within 30s",
    "KeyError: 'CostCenter'",
)


@dataclass(frozen=True)
class BigTrail:
    """A database of ``rows`` audit entries, spread evenly over ``[start_us, end_us)``."""

    path: Path
    rows: int
    start_us: int
    end_us: int
    counts: dict[str, int]
    failures: int
    build_seconds: float
