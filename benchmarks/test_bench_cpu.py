"""Benchmark 5: total CPU per call at a steady, moderate rate (about 1,000 calls a second).

Each round makes 3,000 calls paced at 1 ms (sleeping to each deadline) and
measures ``time.process_time()`` (all threads of the process: the caller, the
writer's loop thread, aiosqlite's connection thread) from the first call to
the end of a ``flush()`` that commits the last of them. The same pacing loop
without auditing is the baseline; ``summarize.py`` reports audited minus
baseline in µs of CPU per call. The wall time pytest-benchmark shows is just
the pacing (~3 s a round); the figure is in ``extra_info``.

Issue 12 adds ``raw``: the same pacing loop, each call handing a pre-built row
(the stored shape: same schema, ids and chain hashes) to a background thread
that, like the library's writer, wakes every 50 ms (the default flush
interval) and writes what has accumulated with one ``executemany`` and one
``COMMIT`` on a plain ``sqlite3`` connection with ``synchronous=FULL`` (the
default). ``summarize.py`` sets (audited - baseline) against (raw - baseline):
what the library costs per call against what SQLite's own work costs at the
same cadence. Under ``--benchmark-disable`` (the CI smoke) a round is 300 calls.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from _support import (
    INSERT,
    KWARGS,
    check_tag_compliance,
    list_policies,
    open_raw,
    service_like_rows,
    settings_info,
    started,
)
from finops_audit import AuditService, audit_tool, audit_tool_sync

RATE = 1_000
CALLS = 3_000
SMOKE_CALLS = 300
ROUNDS = 3
#: The service's default flush interval and synchronous mode, for the raw cadence.
RAW_INTERVAL = 0.05
RAW_SYNCHRONOUS = "FULL"


def paced_sync(fn: Callable[..., Any], calls: int = CALLS, rate: int = RATE) -> None:
    period = 1.0 / rate
    kw = KWARGS
    clock = time.perf_counter
    sleep = time.sleep
    t0 = clock()
    for i in range(calls):
        fn(**kw)
        delay = t0 + (i + 1) * period - clock()
        if delay > 0:
            sleep(delay)


async def paced_async(
    fn: Callable[..., Coroutine[Any, Any, Any]], calls: int = CALLS, rate: int = RATE
) -> None:
    period = 1.0 / rate
    kw = KWARGS
    clock = time.perf_counter
    sleep = asyncio.sleep
    t0 = clock()
    for i in range(calls):
        await fn(**kw)
        delay = t0 + (i + 1) * period - clock()
        if delay > 0:
            await sleep(delay)


class RawCadence:
    """Plain ``sqlite3`` at the writer's cadence: one transaction of what came in every 50 ms.

    Callers append a pre-built row to a deque; a thread wakes every
    ``interval``, and writes the rows it finds with ``BEGIN IMMEDIATE``, one
    ``executemany`` and ``COMMIT``. ``flush()`` returns once the next tick has
    committed everything appended before it.
    """

    def __init__(self, path: Path, rows: list[tuple[Any, ...]], interval: float) -> None:
        self.interval = interval
        self._rows = iter(rows)
        self._pending: deque[tuple[Any, ...]] = deque()
        self._flushes: deque[threading.Event] = deque()
        self._stop = threading.Event()
        self._path = path
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="raw-cadence", daemon=True)
        self._thread.start()

    def tool(self, **kw: Any) -> int:
        result = list_policies(**kw)
        self._pending.append(next(self._rows))
        return result

    async def atool(self, **kw: Any) -> int:
        result = await check_tag_compliance(**kw)
        self._pending.append(next(self._rows))
        return result

    def flush(self) -> None:
        done = threading.Event()
        self._flushes.append(done)
        while not done.wait(1.0):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError("the raw cadence writer died") from self._error

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _write(self, conn: sqlite3.Connection) -> None:
        pending = self._pending
        batch = [pending.popleft() for _ in range(len(pending))]
        if batch:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, batch)
            conn.execute("COMMIT")

    def _run(self) -> None:
        try:
            conn = open_raw(self._path, synchronous=RAW_SYNCHRONOUS)
        except BaseException as exc:  # pragma: no cover - reported by flush()/close()
            self._error = exc
            return
        try:
            while True:
                stopping = self._stop.wait(self.interval)
                asked = [self._flushes.popleft() for _ in range(len(self._flushes))]
                self._write(conn)
                for done in asked:
                    done.set()
                if stopping:
                    return
        except BaseException as exc:  # pragma: no cover - reported by flush()/close()
            self._error = exc
        finally:
            conn.close()

    def count(self) -> int:
        conn = sqlite3.connect(self._path)
        try:
            return int(conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0])
        finally:
            conn.close()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.mark.benchmark(group="5-cpu-at-1000-per-s")
@pytest.mark.parametrize("flavor", ["sync", "async"])
@pytest.mark.parametrize("role", ["baseline", "audited", "raw"])
def test_cpu_per_call(
    benchmark: Any,
    service_factory: Callable[..., AuditService],
    loop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    flavor: str,
    role: str,
) -> None:
    calls = SMOKE_CALLS if benchmark.disabled else CALLS
    svc = started(service_factory()) if role == "audited" else None
    raw = None
    if role == "raw":
        rows = service_like_rows(calls * (ROUNDS + 1))
        raw = RawCadence(tmp_path / "raw-cadence.db", rows, RAW_INTERVAL)
    if flavor == "sync":
        fn: Callable[..., Any] = list_policies
        if svc is not None:
            fn = audit_tool_sync(service=svc)(list_policies)
        elif raw is not None:
            fn = raw.tool

        def run() -> None:
            paced_sync(fn, calls)

    else:
        afn: Callable[..., Coroutine[Any, Any, Any]] = check_tag_compliance
        if svc is not None:
            afn = audit_tool(service=svc)(check_tag_compliance)
        elif raw is not None:
            afn = raw.atool

        def run() -> None:
            loop.run_until_complete(paced_async(afn, calls))

    cpu: list[float] = []
    caller: list[float] = []
    rates: list[float] = []

    def one_round() -> None:
        wall0, cpu0, main0 = time.perf_counter(), time.process_time(), time.thread_time()
        run()
        if svc is not None:
            svc.flush()  # the writer's CPU for the last entries belongs to this round
        if raw is not None:
            raw.flush()
        main1, cpu1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
        cpu.append((cpu1 - cpu0) / calls * 1e6)
        caller.append((main1 - main0) / calls * 1e6)
        rates.append(calls / (wall1 - wall0))

    try:
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    finally:
        if raw is not None:
            raw.close()
    if raw is not None:
        assert raw.count() == calls * len(cpu)
        benchmark.extra_info.update(
            {"raw_interval_s": RAW_INTERVAL, "raw_synchronous": RAW_SYNCHRONOUS}
        )
    if svc is not None:
        benchmark.extra_info.update(settings_info(svc))
        stats = svc.stats()
        assert stats.dropped == 0, stats
        assert stats.pending == 0, stats
    benchmark.extra_info.update(
        {
            "figure": "cpu",
            "flavor": flavor,
            "role": role,
            "rate_target": RATE,
            "calls_per_round": calls,
            "cpu_us_per_call": [round(x, 2) for x in cpu],
            "cpu_us_per_call_median": round(statistics.median(cpu), 2),
            "caller_thread_cpu_us_per_call_median": round(statistics.median(caller), 2),
            "other_threads_cpu_us_per_call_median": round(
                statistics.median(c - m for c, m in zip(cpu, caller, strict=True)), 2
            ),
            "achieved_rate_median": round(statistics.median(rates)),
        }
    )
