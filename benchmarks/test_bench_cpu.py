"""Benchmark 5: total CPU per call at a steady, moderate rate (about 1,000 calls a second).

Each round makes 3,000 calls paced at 1 ms (sleeping to each deadline) and
measures ``time.process_time()`` (all threads of the process: the caller, the
writer's loop thread, aiosqlite's connection thread) from the first call to
the end of a ``flush()`` that commits the last of them. The same pacing loop
without auditing is the baseline; ``summarize.py`` reports audited minus
baseline in µs of CPU per call. The wall time pytest-benchmark shows is just
the pacing (~3 s a round); the figure is in ``extra_info``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from _support import KWARGS, check_tag_compliance, list_policies, settings_info, started
from finops_audit import AuditService, audit_tool, audit_tool_sync

RATE = 1_000
CALLS = 3_000
ROUNDS = 3


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


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.mark.benchmark(group="5-cpu-at-1000-per-s")
@pytest.mark.parametrize("flavor", ["sync", "async"])
@pytest.mark.parametrize("role", ["baseline", "audited"])
def test_cpu_per_call(
    benchmark: Any,
    service_factory: Callable[..., AuditService],
    loop: asyncio.AbstractEventLoop,
    flavor: str,
    role: str,
) -> None:
    svc = started(service_factory()) if role == "audited" else None
    if flavor == "sync":
        fn: Callable[..., Any] = (
            audit_tool_sync(service=svc)(list_policies) if svc is not None else list_policies
        )

        def run() -> None:
            paced_sync(fn)

    else:
        afn = audit_tool(service=svc)(check_tag_compliance) if svc else check_tag_compliance

        def run() -> None:
            loop.run_until_complete(paced_async(afn))

    cpu: list[float] = []
    caller: list[float] = []
    rates: list[float] = []

    def one_round() -> None:
        wall0, cpu0, main0 = time.perf_counter(), time.process_time(), time.thread_time()
        run()
        if svc is not None:
            svc.flush()  # the writer's CPU for the last entries belongs to this round
        main1, cpu1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
        cpu.append((cpu1 - cpu0) / CALLS * 1e6)
        caller.append((main1 - main0) / CALLS * 1e6)
        rates.append(CALLS / (wall1 - wall0))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
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
            "calls_per_round": CALLS,
            "cpu_us_per_call": [round(x, 2) for x in cpu],
            "cpu_us_per_call_median": round(statistics.median(cpu), 2),
            "caller_thread_cpu_us_per_call_median": round(statistics.median(caller), 2),
            "other_threads_cpu_us_per_call_median": round(
                statistics.median(c - m for c, m in zip(cpu, caller, strict=True)), 2
            ),
            "achieved_rate_median": round(statistics.median(rates)),
        }
    )
