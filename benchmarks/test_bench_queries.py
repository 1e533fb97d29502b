"""Benchmark 4: ``get_logs`` on a 1,000,000-row trail (default ``limit=100``, newest first).

The service is pointed at the trail built once per session (see ``conftest.py``);
each timed call is the user's whole cost: the read-your-writes flush through the
writer, the query through aiosqlite, and building 100 ``AuditLogEntry`` models.
``extra_info["plan"]`` is SQLite's ``EXPLAIN QUERY PLAN`` for the same SQL.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from _support import COMMON_TOOL, RARE_TOOL, BigTrail, settings_info
from finops_audit import AuditService, AuditStatus
from finops_audit.service import make_query
from finops_audit.storage.sqlite import build_select

ROUNDS = 200


def _window(trail: BigTrail) -> tuple[datetime, datetime]:
    middle = (trail.start_us + trail.end_us) // 2
    since = datetime.fromtimestamp(middle // 1_000_000, timezone.utc)
    return since, since + timedelta(hours=1)


def _cases(trail: BigTrail) -> dict[str, dict[str, Any]]:
    since, until = _window(trail)
    return {
        "tool-common": {"tool_name": COMMON_TOOL},
        "tool-rare": {"tool_name": RARE_TOOL},
        "status-failure": {"status": AuditStatus.FAILURE},
        "time-1h": {"since": since, "until": until},
    }


def _plan(trail: BigTrail, filters: dict[str, Any]) -> list[str]:
    sql, params = build_select(
        make_query(
            limit=100,
            offset=0,
            **{"tool_name": None, "status": None, "since": None, "until": None, **filters},
        )
    )
    conn = sqlite3.connect(trail.path)
    try:
        return [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        conn.close()


@pytest.mark.benchmark(group="4-get_logs-1M")
@pytest.mark.parametrize("case", ["tool-common", "tool-rare", "status-failure", "time-1h"])
def test_get_logs(
    benchmark: Any, big_trail: BigTrail, trail_service: AuditService, case: str
) -> None:
    filters = _cases(big_trail)[case]
    result = benchmark.pedantic(
        trail_service.get_logs, kwargs=filters, rounds=ROUNDS, warmup_rounds=5
    )
    expected = {
        "tool-common": 100,
        "tool-rare": 100,  # ~1,000 rows of the rare tool exist
        "status-failure": 100,
    }.get(case)
    if expected is not None:
        assert len(result) == expected
    else:
        assert 1 <= len(result) <= 100
    benchmark.extra_info.update(
        {
            "figure": "get_logs",
            "case": case,
            "filters": {k: str(v) for k, v in filters.items()},
            "rows_in_db": big_trail.rows,
            "rows_returned": len(result),
            "rare_tool_rows": big_trail.counts[RARE_TOOL],
            "failures_in_db": big_trail.failures,
            "db_build_seconds": round(big_trail.build_seconds, 1),
            "plan": _plan(big_trail, filters),
            **settings_info(trail_service),
        }
    )
