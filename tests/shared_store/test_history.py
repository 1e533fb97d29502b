"""Three months of chosen rows: percentiles with NULL and tied durations, buckets,
gap markers, rows from before the hash chain, numbers jsonb would respell."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from finops_audit import AuditLogEntry, AuditStatus
from finops_audit.storage.base import AuditReader, LogQuery

from .conftest import GAP_TOOL, HISTORY, at
from .test_queries import newest_first, plain

pytestmark = pytest.mark.asyncio


async def test_every_entry_reads_the_same(
    history_store: AuditReader, history_entries: list[AuditLogEntry]
) -> None:
    got = await history_store.page_after(LogQuery(limit=1000), 0)
    assert plain(got) == history_entries
    assert len(got) == 3 + len(HISTORY)
    exact = got[5].parameters
    assert exact["big"] == 2**70
    assert isinstance(exact["big"], int)
    assert exact["float"] == 1e20
    assert isinstance(exact["float"], float)
    assert list(exact) == ["n", "z", "a", "big", "float"]  # key order as written
    labelled = got[3]
    assert list(labelled.labels) == ["team", "a"]


async def test_history_rows_read_the_same_as_dicts(
    history_both: tuple[AuditReader, AuditReader],
) -> None:
    local, central = history_both
    mine = await local.rows_after(LogQuery(limit=1000), 0)
    theirs = await central.rows_after(LogQuery(limit=1000), 0)
    for row in theirs:
        row.pop("replica_id")
    assert theirs == mine


MONTHS = {
    "march": (datetime(2025, 3, 1, tzinfo=timezone.utc), datetime(2025, 4, 1, tzinfo=timezone.utc)),
    "april": (datetime(2025, 4, 1, tzinfo=timezone.utc), datetime(2025, 5, 1, tzinfo=timezone.utc)),
    "may": (datetime(2025, 5, 1, tzinfo=timezone.utc), datetime(2025, 6, 1, tzinfo=timezone.utc)),
}


@pytest.mark.parametrize("month", list(MONTHS))
async def test_windows_across_partitions(
    history_store: AuditReader, history_entries: list[AuditLogEntry], month: str
) -> None:
    since, end = MONTHS[month]
    until = end - timedelta(microseconds=1)
    expected = newest_first([e for e in history_entries if since <= e.timestamp <= until])
    assert expected
    got = await history_store.query(LogQuery(since=since, until=until, limit=1000))
    assert plain(got) == expected
    assert await history_store.count(LogQuery(since=since, until=until)) == len(expected)


async def test_gap_markers_are_entries_but_not_calls(
    history_both: tuple[AuditReader, AuditReader],
) -> None:
    for store in history_both:
        gaps = await store.query(LogQuery(tool_name=GAP_TOOL))
        assert len(gaps) == 1
        stats = await store.tool_stats(LogQuery())
        assert GAP_TOOL not in {s.tool_name for s in stats}
        groups = await store.error_groups(LogQuery(limit=100))
        assert GAP_TOOL not in {g.tool_name for g in groups}


async def test_percentiles_count_null_durations_first(history_store: AuditReader) -> None:
    """beta: NULL, NULL, NULL, 0.0, 2.0, 4.0, 7.5 in rank order (nearest rank, NULLs first)."""
    stats = {s.tool_name: s for s in await history_store.tool_stats(LogQuery())}
    beta = stats["beta"]
    assert (beta.calls, beta.failures) == (7, 1)
    assert beta.p50_ms == 0.0  # rank ceil(3.5) = 4
    assert beta.p95_ms == 7.5  # rank ceil(6.65) = 7
    assert beta.p99_ms == 7.5
    assert beta.max_ms == 7.5
    assert beta.avg_ms == pytest.approx(13.5 / 4)
    gamma = stats["gamma"]  # ties: 1.0, 1.0, 1.0, 2.0, 3.0
    assert (gamma.p50_ms, gamma.p95_ms, gamma.max_ms) == (1.0, 3.0, 3.0)
    assert stats["alpha"].calls == 3 + sum(1 for h in HISTORY if h[1] == "alpha")


WINDOWS: dict[str, dict[str, Any]] = {
    "all": {},
    "april": {"since": MONTHS["april"][0], "until": MONTHS["april"][1]},
    "beta": {"tool_name": "beta"},
    "beta-late": {"tool_name": "beta", "since": at(100)},
    "nothing": {"since": at(10_000)},
    "one-instant": {"since": at(72), "until": at(72)},
}


@pytest.mark.parametrize("window", list(WINDOWS))
async def test_analytics_are_equal(
    history_both: tuple[AuditReader, AuditReader], window: str
) -> None:
    local, central = history_both
    query = LogQuery(limit=50, **WINDOWS[window])
    assert await central.tool_stats(query) == await local.tool_stats(query)
    assert plain(await central.slowest(query)) == await local.slowest(query)
    assert await central.error_groups(query) == await local.error_groups(query)
    for seconds in (1, 7, 3600, 86400, 7 * 86400):
        assert await central.time_buckets(query, seconds) == await local.time_buckets(
            query, seconds
        )


async def test_error_groups_and_buckets_values(history_store: AuditReader) -> None:
    groups = await history_store.error_groups(LogQuery(limit=10))
    bad_month = next(g for g in groups if g.error_message == "ValueError: bad month")
    assert (bad_month.tool_name, bad_month.count) == ("alpha", 3)
    assert bad_month.first_seen == at(3.0)
    assert bad_month.last_seen == at(790.0)
    assert groups[0].last_seen == max(g.last_seen for g in groups)
    days = await history_store.time_buckets(LogQuery(), 86400)
    assert sum(b.calls for b in days) == 3 + len(HISTORY) - 1  # not the gap marker
    assert all(b.start.tzinfo is not None and b.start.timestamp() % 86400 == 0 for b in days)
    assert sum(b.failures for b in days) == sum(
        1 for h in HISTORY if h[3] is not None and h[1] != GAP_TOOL
    )


async def test_failures_filter_uses_status(
    history_store: AuditReader, history_entries: list[AuditLogEntry]
) -> None:
    got = await history_store.query(LogQuery(status=AuditStatus.FAILURE, limit=100))
    assert plain(got) == newest_first(
        [e for e in history_entries if e.status is AuditStatus.FAILURE]
    )
