"""Benchmark 6 (issue 12): what a started service costs while nothing is audited.

A round is an idle stretch (10 s; ``FINOPS_BENCH_IDLE_SECONDS`` shortens it, and
the CI smoke run under ``--benchmark-disable`` uses 0.5 s) during which the
benchmark's own thread only sleeps. It measures ``time.process_time()`` (every
thread of the process) and the process's voluntary context switches
(``getrusage``: each one a thread going to sleep, so about one per wake-up).

* ``audited``: a service started the way a server starts it (writer running,
  database open, one entry written and flushed), then left alone;
* ``baseline``: the same idle stretch with no service at all.

``summarize.py`` reports (audited - baseline) CPU per idle second; the target is
under 0.1 ms a second. pytest-benchmark's own time column is just the sleep.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from _support import settings_info, started
from finops_audit import AuditService

ROUNDS = 3
SMOKE_SECONDS = 0.5


def _idle_seconds(disabled: bool) -> float:
    configured = os.environ.get("FINOPS_BENCH_IDLE_SECONDS")
    if configured:
        return float(configured)
    return SMOKE_SECONDS if disabled else 10.0


def _switches() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


@pytest.mark.benchmark(group="6-idle-cpu")
@pytest.mark.parametrize("role", ["baseline", "audited"])
def test_idle_cpu(benchmark: Any, service_factory: Callable[..., AuditService], role: str) -> None:
    svc = started(service_factory()) if role == "audited" else None
    seconds = _idle_seconds(benchmark.disabled)
    cpu_ms: list[float] = []
    wakeups: list[float] = []

    def idle() -> None:
        switches0, cpu0 = _switches(), time.process_time()
        time.sleep(seconds)
        cpu1, switches1 = time.process_time(), _switches()
        cpu_ms.append((cpu1 - cpu0) / seconds * 1e3)
        wakeups.append((switches1 - switches0 - 1) / seconds)  # our own sleep is one

    benchmark.pedantic(idle, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    if svc is not None:
        benchmark.extra_info.update(settings_info(svc))
        stats = svc.stats()
        assert stats.running, stats
        assert stats.pending == 0, stats
    benchmark.extra_info.update(
        {
            "figure": "idle",
            "role": role,
            "idle_seconds": seconds,
            "cpu_ms_per_s": [round(x, 4) for x in cpu_ms],
            "cpu_ms_per_s_median": round(statistics.median(cpu_ms), 4),
            "wakeups_per_s": [round(x, 1) for x in wakeups],
            "wakeups_per_s_median": round(statistics.median(wakeups), 1),
        }
    )
