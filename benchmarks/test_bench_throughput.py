"""Benchmarks 2 and 3: persisted throughput, and the drain at shutdown.

2. ``N`` audited calls made back to back and all ``N`` rows committed
   (``flush()`` returned), against raw ``sqlite3`` ``executemany`` of ``N``
   pre-built rows of the same shape into the same schema, 1,000 rows and one
   commit per transaction, ``synchronous=FULL`` like the service's default.
   Each round gets a fresh database file; opening it is outside the timing.
3. ``close()`` with 100,000 entries pending (beside it, ``raw``: the same
   100,000 rows through raw ``executemany``, 1,000 a transaction):

   * ``all-pending``: ``batch_size=100_000`` and ``flush_interval=60``, so the
     writer does not touch the queue until the timed region: setup makes
     99,999 calls, the timed region makes the 100,000th (which wakes the
     writer: a full batch) and calls ``close()``. This is the pure cost of
     converting and committing 100,000 entries.
   * ``default-settings``: batch 1,000 and a 50 ms window. Setup makes 100,000
     calls as fast as it can while the writer runs concurrently; the timed
     region is ``close()`` writing whatever is still queued
     (``extra_info["pending_at_close"]`` lists how many, per round).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _support import (
    KWARGS,
    async_burst,
    check_tag_compliance,
    count_rows,
    insert_batches,
    list_policies,
    open_raw,
    service_like_rows,
    settings_info,
    started,
    sync_burst,
)
from finops_audit import AuditService, audit_tool, audit_tool_sync
from finops_audit.config import AuditSettings

N = 50_000
THROUGHPUT_ROUNDS = 5
PENDING = 100_000
DRAIN_ROUNDS = 5


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


# ---------------------------------------------------------------------- 2. throughput


@pytest.mark.benchmark(group="2-throughput")
def test_raw_executemany(benchmark: Any, tmp_path: Path) -> None:
    rows = service_like_rows(N)
    conns: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        conn = open_raw(tmp_path / f"raw-{len(conns)}.db", synchronous="FULL")
        conns.append(conn)
        return (conn,), {}

    def write(conn: Any) -> None:
        insert_batches(conn, rows, 1_000)

    benchmark.extra_info.update(
        {"figure": "throughput", "role": "raw", "flavor": "sqlite3", "rows_per_round": N}
    )
    try:
        benchmark.pedantic(write, setup=setup, rounds=THROUGHPUT_ROUNDS, warmup_rounds=1)
    finally:
        for conn in conns:
            conn.close()
    # the last round's file: a one-round smoke run (--benchmark-disable) has only raw-0
    assert count_rows(tmp_path / f"raw-{len(conns) - 1}.db") == N


#: Issue 5: redaction and the hash chain run on the writer's side and are on by
#: default; ``plain`` turns both off to show what they cost.
WRITER_OPTIONS = {"defaults": {}, "plain": {"redact": False, "hash_chain": False}}


@pytest.mark.benchmark(group="2-throughput")
@pytest.mark.parametrize("options", list(WRITER_OPTIONS))
@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_pipeline(
    benchmark: Any,
    service_factory: Callable[..., AuditService],
    loop: asyncio.AbstractEventLoop,
    flavor: str,
    options: str,
) -> None:
    made: list[AuditService] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        if made:
            made[-1].close()  # outside the timing: the previous round's service
        svc = started(service_factory(**WRITER_OPTIONS[options]))
        made.append(svc)
        if flavor == "sync":
            burst = sync_burst(audit_tool_sync(service=svc)(list_policies), N)
        else:
            burst = async_burst(loop, audit_tool(service=svc)(check_tag_compliance), N)
        return (svc, burst), {}

    def calls_then_flush(svc: AuditService, burst: Callable[[], None]) -> None:
        burst()
        svc.flush()

    benchmark.extra_info.update(
        {
            "figure": "throughput",
            "role": "pipeline",
            "flavor": flavor,
            "options": options,
            "rows_per_round": N,
        }
    )
    benchmark.pedantic(calls_then_flush, setup=setup, rounds=THROUGHPUT_ROUNDS, warmup_rounds=1)
    last = made[-1]
    benchmark.extra_info.update(settings_info(last))
    stats = last.stats()
    assert stats.written == N + 1, stats  # + the warm-up row
    assert stats.dropped == 0, stats
    assert count_rows(last.db_path) == N + 1


# ---------------------------------------------------------------------- 3. drain at close


@pytest.mark.benchmark(group="3-flush-100k")
def test_raw_executemany_100k(benchmark: Any, tmp_path: Path) -> None:
    """The same 100,000 rows through raw ``sqlite3``, 1,000 a transaction: this machine's floor."""
    rows = service_like_rows(PENDING)
    conns: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        conn = open_raw(tmp_path / f"raw100k-{len(conns)}.db", synchronous="FULL")
        conns.append(conn)
        return (conn,), {}

    def write(conn: Any) -> None:
        insert_batches(conn, rows, 1_000)

    benchmark.extra_info.update({"figure": "drain", "settings": "raw", "entries": PENDING})
    try:
        benchmark.pedantic(write, setup=setup, rounds=DRAIN_ROUNDS, warmup_rounds=0)
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.benchmark(group="3-flush-100k")
@pytest.mark.parametrize("settings", ["all-pending", "default-settings"])
def test_close_with_100k_pending(
    benchmark: Any, service_factory: Callable[..., AuditService], settings: str
) -> None:
    overrides: dict[str, Any] = (
        {"batch_size": PENDING, "queue_size": PENDING, "flush_interval": 60}
        if settings == "all-pending"
        else {}
    )
    if settings == "all-pending" and "max_unwritten_seconds" in AuditSettings.model_fields:
        # issue 12's burst window: without it the block policy wakes the writer once the
        # queue holds more than a second of its measured rate, and setup's calls get written
        overrides["max_unwritten_seconds"] = 3600
    made: list[AuditService] = []
    pending_at_close: list[int] = []
    kw = KWARGS

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        svc = started(service_factory(**overrides))
        made.append(svc)
        tool = audit_tool_sync(service=svc)(list_policies)
        if settings == "all-pending":
            for _ in range(PENDING - 1):
                tool(**kw)
            assert svc.stats().pending == PENDING - 1
        else:
            for _ in range(PENDING):
                tool(**kw)
            pending_at_close.append(svc.stats().pending)
        return (svc, tool), {}

    def close(svc: AuditService, tool: Callable[..., Any]) -> None:
        if settings == "all-pending":
            tool(**kw)  # the 100,000th entry: a full batch, the writer wakes
        svc.close()

    benchmark.extra_info.update(
        {"figure": "drain", "settings": settings, "entries": PENDING, **overrides}
    )
    benchmark.pedantic(close, setup=setup, rounds=DRAIN_ROUNDS, warmup_rounds=0)
    benchmark.extra_info.update(settings_info(made[-1]))
    if pending_at_close:
        benchmark.extra_info["pending_at_close"] = pending_at_close
    for svc in made:
        assert count_rows(svc.db_path) == PENDING + 1  # + the warm-up row
