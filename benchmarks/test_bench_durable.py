"""Benchmark 8 (issue 12): the durable mode, ``AUDIT_DURABILITY=commit``.

In this mode a decorated call returns only once its entry is committed, so its
honest cost is a commit's. Two figures, each against a baseline in the same run:

* **latency**: one call at a time (nothing else running), each call timed on
  its own; p50 and p99 of a round of calls, for a sync and an async tool, set
  against one bare ``BEGIN IMMEDIATE`` + ``executemany`` of one row + ``COMMIT``
  on a plain ``sqlite3`` connection in the same ``synchronous`` mode (``FULL``,
  the default) with the stored row shape. Target: p50 within 1.5x of it.
* **concurrency**: 64 async callers on one loop, and 16 threads, each making its
  share of the calls back to back; a round ends when every call has returned
  and ``flush()`` has returned (so the default mode's figure is persisted
  calls too). Durable against the default mode. Target: at least half.

They skip, saying so, on a tree whose ``AuditSettings`` has no ``durability``.
Under ``--benchmark-disable`` (the CI smoke) each round is a few dozen calls.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _support import (
    INSERT,
    KWARGS,
    check_tag_compliance,
    count_rows,
    list_policies,
    open_raw,
    service_like_rows,
    settings_info,
    started,
)
from finops_audit import AuditService, audit_tool, audit_tool_sync
from finops_audit.config import AuditSettings

DURABLE: dict[str, Any] = {"durability": "commit"}
LATENCY_CALLS = 500
LATENCY_ROUNDS = 3
SMOKE_LATENCY_CALLS = 20
TASKS = 64
THREADS = 16
CONCURRENT_CALLS = 6_400
SMOKE_CONCURRENT_CALLS = 256
CONCURRENT_ROUNDS = 3

pytestmark = pytest.mark.skipif(
    "durability" not in AuditSettings.model_fields,
    reason="this tree has no durable mode (AuditSettings has no 'durability' field)",
)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _percentiles(rounds: list[list[int]]) -> dict[str, Any]:
    """p50 and p99 (µs) of each round's per-call times, and the median of each over rounds."""
    p50s, p99s = [], []
    for ns in rounds:
        ordered = sorted(ns)
        p50s.append(statistics.median(ordered) / 1e3)
        p99s.append(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] / 1e3)
    return {
        "p50_us": [round(x, 1) for x in p50s],
        "p99_us": [round(x, 1) for x in p99s],
        "p50_us_median": round(statistics.median(p50s), 1),
        "p99_us_median": round(statistics.median(p99s), 1),
    }


# ---------------------------------------------------------------------- latency


@pytest.mark.benchmark(group="8-durable-latency")
def test_raw_commit_one_row(benchmark: Any, tmp_path: Path) -> None:
    calls = SMOKE_LATENCY_CALLS if benchmark.disabled else LATENCY_CALLS
    rows = iter(service_like_rows(calls * (LATENCY_ROUNDS + 1)))
    conn = open_raw(tmp_path / "raw-one-row.db", synchronous="FULL")
    times: list[list[int]] = []
    clock = time.perf_counter_ns

    def one_round() -> None:
        ns: list[int] = []
        for _ in range(calls):
            row = [next(rows)]
            t0 = clock()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, row)
            conn.execute("COMMIT")
            ns.append(clock() - t0)
        times.append(ns)

    try:
        benchmark.pedantic(one_round, rounds=LATENCY_ROUNDS, iterations=1, warmup_rounds=0)
    finally:
        conn.close()
    assert count_rows(tmp_path / "raw-one-row.db") == calls * len(times)
    benchmark.extra_info.update(
        {
            "figure": "durable-latency",
            "role": "raw",
            "flavor": "sqlite3",
            "synchronous": "FULL",
            "calls_per_round": calls,
            **_percentiles(times),
        }
    )


@pytest.mark.benchmark(group="8-durable-latency")
@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_durable_call_latency(
    benchmark: Any,
    service_factory: Callable[..., AuditService],
    loop: asyncio.AbstractEventLoop,
    flavor: str,
) -> None:
    calls = SMOKE_LATENCY_CALLS if benchmark.disabled else LATENCY_CALLS
    svc = started(service_factory(**DURABLE))
    times: list[list[int]] = []
    clock = time.perf_counter_ns
    kw = KWARGS
    if flavor == "sync":
        fn = audit_tool_sync(service=svc)(list_policies)

        def one_round() -> None:
            ns: list[int] = []
            for _ in range(calls):
                t0 = clock()
                fn(**kw)
                ns.append(clock() - t0)
            times.append(ns)

    else:
        afn = audit_tool(service=svc)(check_tag_compliance)

        async def calls_one_by_one() -> list[int]:
            ns: list[int] = []
            for _ in range(calls):
                t0 = clock()
                await afn(**kw)
                ns.append(clock() - t0)
            return ns

        def one_round() -> None:
            times.append(loop.run_until_complete(calls_one_by_one()))

    benchmark.pedantic(one_round, rounds=LATENCY_ROUNDS, iterations=1, warmup_rounds=0)
    # A durable call returns once its entry is committed: every row is on disk for
    # another connection now, before any flush (+ the warm-up row).
    on_disk = count_rows(svc.db_path)
    assert on_disk >= calls * len(times) + 1, (on_disk, svc.stats())
    benchmark.extra_info.update(settings_info(svc))
    benchmark.extra_info.update(
        {
            "figure": "durable-latency",
            "role": "durable",
            "flavor": flavor,
            "calls_per_round": calls,
            **_percentiles(times),
        }
    )


# ---------------------------------------------------------------------- concurrency


@pytest.mark.benchmark(group="8-durable-concurrency")
@pytest.mark.parametrize("mode", ["default", "durable"])
@pytest.mark.parametrize("callers", ["async-64", "threads-16"])
def test_concurrent_throughput(
    benchmark: Any,
    service_factory: Callable[..., AuditService],
    loop: asyncio.AbstractEventLoop,
    callers: str,
    mode: str,
) -> None:
    calls = SMOKE_CONCURRENT_CALLS if benchmark.disabled else CONCURRENT_CALLS
    svc = started(service_factory(**(DURABLE if mode == "durable" else {})))
    kw = KWARGS
    if callers == "async-64":
        afn = audit_tool(service=svc)(check_tag_compliance)
        share = calls // TASKS

        async def caller() -> None:
            for _ in range(share):
                await afn(**kw)

        async def all_callers() -> None:
            await asyncio.gather(*(caller() for _ in range(TASKS)))

        def one_round() -> None:
            loop.run_until_complete(all_callers())
            svc.flush()

    else:
        fn = audit_tool_sync(service=svc)(list_policies)
        share = calls // THREADS

        def one_round() -> None:
            gate = threading.Barrier(THREADS + 1)
            failures: list[BaseException] = []

            def caller() -> None:
                gate.wait()
                try:
                    for _ in range(share):
                        fn(**kw)
                except BaseException as exc:  # pragma: no cover - fails the round below
                    failures.append(exc)

            threads = [threading.Thread(target=caller) for _ in range(THREADS)]
            for t in threads:
                t.start()
            gate.wait()
            for t in threads:
                t.join()
            svc.flush()
            assert not failures, failures

    benchmark.pedantic(one_round, setup=svc.flush, rounds=CONCURRENT_ROUNDS, warmup_rounds=0)
    stats = svc.stats()
    rounds = 1 if benchmark.disabled else CONCURRENT_ROUNDS
    assert stats.dropped == 0, stats
    assert stats.written == share * (TASKS if callers == "async-64" else THREADS) * rounds + 1
    benchmark.extra_info.update(settings_info(svc))
    benchmark.extra_info.update(
        {
            "figure": "durable-concurrency",
            "callers": callers,
            "mode": mode,
            "rows_per_round": calls,
        }
    )
