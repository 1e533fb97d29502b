"""Benchmark 1b (issue 12): a burst of back-to-back calls at the default settings.

The sustained figure (benchmark 1) keeps the writer ahead of the caller on
purpose: 2,000-call rounds, a 1,000,000 queue and the ``drop`` policy. A real
burst at the defaults is another regime: the ``block`` policy may hold callers
back once the writer falls behind. Here nothing is overridden but the database
path, and a round is one burst of 1,000, 10,000 or 50,000 calls:

* ``audited``: the decorated tool, the service's writer already started and its
  queue empty (``flush()`` in the setup, outside the timing);
* ``bare``: the same tool undecorated;
* ``queuehandler``: one stdlib ``logging.info`` through ``QueueHandler`` +
  ``QueueListener`` per call, the same burst length, the queue drained first.

The caller's time per call is the burst's wall time / calls; the ``flush()``
after the burst is not in it. What it took to get the burst on disk is in
``extra_info``: ``flush_after_burst_s`` (from the burst's end until ``flush()``
returned) and ``burst_to_persisted_s`` (from its first call). Under
``--benchmark-disable`` (the CI smoke) one round runs of each.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from _support import (
    async_burst,
    check_tag_compliance,
    list_policies,
    settings_info,
    started,
    sync_burst,
)
from finops_audit import AuditService, audit_tool, audit_tool_sync
from test_bench_overhead import QueueLogging

SIZES = (1_000, 10_000, 50_000)
ROUNDS = {1_000: 30, 10_000: 7, 50_000: 5}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _info(flavor: str, role: str, calls: int) -> dict[str, Any]:
    return {"figure": "burst", "flavor": flavor, "role": role, "calls_per_round": calls}


class _Timed:
    """Wraps a burst: remembers when each round began and ended, outside pytest's clock."""

    def __init__(self, burst: Callable[[], None]) -> None:
        self._burst = burst
        self.began = 0.0
        self.ended = 0.0

    def __call__(self) -> None:
        self.began = time.perf_counter()
        self._burst()
        self.ended = time.perf_counter()


@pytest.mark.benchmark(group="1b-burst-default-settings")
@pytest.mark.parametrize("calls", SIZES)
@pytest.mark.parametrize("flavor", ["sync", "async"])
@pytest.mark.parametrize("role", ["bare", "audited"])
def test_burst(
    benchmark: Any,
    service_factory: Callable[..., AuditService],
    loop: asyncio.AbstractEventLoop,
    role: str,
    flavor: str,
    calls: int,
) -> None:
    svc = started(service_factory())  # the defaults: only the path is chosen
    if flavor == "sync":
        fn: Any = list_policies
        if role == "audited":
            fn = audit_tool_sync(service=svc)(list_policies)
        timed = _Timed(sync_burst(fn, calls))
    else:
        afn: Any = check_tag_compliance
        if role == "audited":
            afn = audit_tool(service=svc)(check_tag_compliance)
        timed = _Timed(async_burst(loop, afn, calls))
    flush_after: list[float] = []
    to_disk: list[float] = []

    def persisted() -> None:
        """Flush the round just timed, and note how long its entries took to reach the disk."""
        if timed.ended:
            svc.flush()
            done = time.perf_counter()
            flush_after.append(done - timed.ended)
            to_disk.append(done - timed.began)
            timed.ended = 0.0
        else:
            svc.flush()

    benchmark.extra_info.update(_info(flavor, role, calls))
    benchmark.extra_info.update(settings_info(svc))
    benchmark.pedantic(timed, setup=persisted, rounds=ROUNDS[calls], warmup_rounds=1)
    persisted()
    stats = svc.stats()
    assert stats.dropped == 0, stats
    assert stats.pending == 0, stats
    if role == "audited":
        benchmark.extra_info.update(
            {
                "flush_after_burst_s": [round(x, 4) for x in flush_after],
                "flush_after_burst_s_median": round(statistics.median(flush_after), 4),
                "burst_to_persisted_s": [round(x, 4) for x in to_disk],
                "burst_to_persisted_s_median": round(statistics.median(to_disk), 4),
            }
        )


@pytest.fixture
def qlog() -> Iterator[QueueLogging]:
    ql = QueueLogging()
    yield ql
    ql.stop()


@pytest.mark.benchmark(group="1b-burst-default-settings")
@pytest.mark.parametrize("calls", SIZES)
def test_burst_queuehandler(benchmark: Any, qlog: QueueLogging, calls: int) -> None:
    call = qlog.call

    def burst() -> None:
        for _ in range(calls):
            call()

    benchmark.extra_info.update(_info("logging", "queuehandler", calls))
    benchmark.pedantic(burst, setup=qlog.drain, rounds=ROUNDS[calls], warmup_rounds=1)
    qlog.drain()
