"""Issue 5: ``export`` and ``stats`` on the 1,000,000-row trail, against raw ``sqlite3``.

* ``export-jsonl``: every entry, oldest first, through ``AuditService.export``
  (keyset pages of 5,000 plain rows into JSON lines), as ``finops-audit export``
  does; the growth of the process's peak RSS shows the memory stays bounded. Baseline:
  ``SELECT *`` with plain ``sqlite3`` and ``json.dumps`` of each row tuple.
* ``tool-stats``: per-tool counts, failures and p50/p95/p99/max computed by
  SQLite (window functions). Baseline: a plain ``GROUP BY`` count and average.
"""

from __future__ import annotations

import io
import json
import resource
import sqlite3
from typing import Any

import pytest

from _support import BigTrail
from finops_audit import AuditService

ROUNDS = 3


@pytest.mark.timeout(900)
@pytest.mark.benchmark(group="5-operations-1M")
def test_raw_select_json(benchmark: Any, big_trail: BigTrail) -> None:
    def run() -> int:
        conn = sqlite3.connect(big_trail.path)
        out = io.StringIO()
        n = 0
        try:
            for row in conn.execute("SELECT * FROM audit_logs ORDER BY id"):
                out.write(json.dumps(row))
                out.write("\n")
                n += 1
                if n % 50_000 == 0:
                    out.seek(0)
                    out.truncate()
        finally:
            conn.close()
        return n

    assert benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=0) == big_trail.rows
    benchmark.extra_info.update({"figure": "operations", "case": "raw-select-json"})


class _Discard(io.TextIOBase):
    """A sink that keeps nothing: the export's own memory is what is measured."""

    def write(self, text: str) -> int:
        return len(text)


@pytest.mark.timeout(900)
@pytest.mark.benchmark(group="5-operations-1M")
def test_export_jsonl(benchmark: Any, big_trail: BigTrail, trail_service: AuditService) -> None:
    growth: list[float] = []

    def run() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n = trail_service.export(_Discard(), "jsonl")
        growth.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        return n

    assert benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=0) == big_trail.rows
    benchmark.extra_info.update(
        {"figure": "operations", "case": "export-jsonl", "peak_mb": max(growth)}
    )


@pytest.mark.benchmark(group="5-operations-1M")
def test_raw_group_by(benchmark: Any, big_trail: BigTrail) -> None:
    def run() -> int:
        conn = sqlite3.connect(big_trail.path)
        try:
            rows = conn.execute(
                "SELECT tool_name, COUNT(*), SUM(status = 'FAILURE'), AVG(execution_time_ms) "
                "FROM audit_logs GROUP BY tool_name"
            ).fetchall()
        finally:
            conn.close()
        return len(rows)

    assert benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=0) >= 10
    benchmark.extra_info.update({"figure": "operations", "case": "raw-group-by"})


@pytest.mark.benchmark(group="5-operations-1M")
def test_tool_stats(benchmark: Any, big_trail: BigTrail, trail_service: AuditService) -> None:
    stats = benchmark.pedantic(trail_service.tool_stats, rounds=ROUNDS, warmup_rounds=0)
    assert sum(t.calls for t in stats) == big_trail.rows
    assert all(t.p50_ms is not None and t.p50_ms <= t.p99_ms for t in stats)  # type: ignore[operator]
    benchmark.extra_info.update({"figure": "operations", "case": "tool-stats"})
