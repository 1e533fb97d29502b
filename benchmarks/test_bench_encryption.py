"""Benchmark 12: field encryption at rest (issue 14), on against off in the same run.

Three figures, each for ``encryption`` off and on (a keyring, every parameter
value and error message encrypted, the default once a keyring is set):

* ``caller``: a burst of ``BURST`` sync calls into a started service: what the
  tool's caller pays. Encryption happens on the writer's side, so this should
  not move.
* ``throughput``: ``N`` calls made back to back and all committed
  (``flush()``), a fresh file each round: persisted rows a second.
* ``cpu``: ``CALLS`` calls paced at 1,000 a second; ``time.process_time()`` of
  all threads from the first call to the flush that commits the last, per call.

``summarize.py``-style ratios (on / off of the medians) are in ``extra_info``
of the ``on`` runs' group; ``python benchmarks/test_bench_encryption.py
bench.json`` prints them from a ``--benchmark-json`` file.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _support import BURST, KWARGS, count_rows, list_policies, started, sync_burst
from finops_audit import AuditService, audit_tool_sync

N = 20_000
ROUNDS = 5
CALLS = 2_000
RATE = 1_000
KEYRING = "bench:" + base64.b64encode(os.urandom(32)).decode()
MODES = {"off": {}, "on": {"encryption_keys": KEYRING}}


def _service(path: Path, mode: str) -> AuditService:
    return AuditService(path, **MODES[mode])  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["off", "on"])
@pytest.mark.benchmark(group="12-encryption-caller")
def test_caller_overhead(benchmark: Any, tmp_path: Path, mode: str) -> None:
    svc = started(_service(tmp_path / "c.db", mode))
    try:
        fn = audit_tool_sync(service=svc)(list_policies)
        benchmark.extra_info.update({"figure": "caller", "encryption": mode, "calls": BURST})
        benchmark.pedantic(sync_burst(fn), rounds=ROUNDS, warmup_rounds=1)
        svc.flush()
    finally:
        svc.close()


@pytest.mark.parametrize("mode", ["off", "on"])
@pytest.mark.benchmark(group="12-encryption-throughput")
def test_persisted_throughput(benchmark: Any, tmp_path: Path, mode: str) -> None:
    made: list[AuditService] = []

    def setup() -> tuple[tuple[Callable[..., Any]], dict[str, Any]]:
        svc = started(_service(tmp_path / f"t-{len(made)}.db", mode))
        made.append(svc)
        return (audit_tool_sync(service=svc)(list_policies),), {}

    def run(fn: Callable[..., Any]) -> None:
        kw = KWARGS
        for _ in range(N):
            fn(**kw)
        made[-1].flush()

    benchmark.extra_info.update({"figure": "throughput", "encryption": mode, "rows": N})
    try:
        benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=0)
    finally:
        for svc in made:
            path = svc.db_path
            svc.close()
            assert count_rows(path) == N + 1
    if not benchmark.disabled:  # a smoke run (--benchmark-disable) keeps no statistics
        benchmark.extra_info["rows_per_second"] = N / benchmark.stats.stats.median


@pytest.mark.parametrize("mode", ["off", "on"])
@pytest.mark.benchmark(group="12-encryption-cpu")
def test_cpu_per_call(benchmark: Any, tmp_path: Path, mode: str) -> None:
    svc = started(_service(tmp_path / "p.db", mode))
    fn = audit_tool_sync(service=svc)(list_policies)
    cpu: list[float] = []

    def paced() -> None:
        period = 1.0 / RATE
        kw = KWARGS
        clock = time.perf_counter
        c0 = time.process_time()
        t0 = clock()
        for i in range(CALLS):
            fn(**kw)
            delay = t0 + (i + 1) * period - clock()
            if delay > 0:
                time.sleep(delay)
        svc.flush()
        cpu.append((time.process_time() - c0) / CALLS * 1e6)

    try:
        benchmark.pedantic(paced, rounds=3, warmup_rounds=0)
    finally:
        svc.close()
    benchmark.extra_info.update(
        {"figure": "cpu", "encryption": mode, "cpu_us_per_call": statistics.median(cpu)}
    )


def ratios(path: str) -> dict[str, float]:
    """on/off ratios of the medians from a ``--benchmark-json`` file."""
    data = json.loads(Path(path).read_text())
    by: dict[tuple[str, str], Any] = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "encryption" in info:
            by[(info["figure"], info["encryption"])] = bench
    out = {}
    for figure in ("caller", "throughput", "cpu"):
        if (figure, "on") not in by or (figure, "off") not in by:
            continue
        on, off = by[(figure, "on")], by[(figure, "off")]
        if figure == "cpu":
            out[figure] = on["extra_info"]["cpu_us_per_call"] / off["extra_info"]["cpu_us_per_call"]
        elif figure == "throughput":
            out[figure] = off["stats"]["median"] / on["stats"]["median"]  # rows/s on / off
        else:
            out[figure] = on["stats"]["median"] / off["stats"]["median"]
    return out


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(ratios(sys.argv[1]), indent=2))
