"""Analytics in the library: tool_stats, slowest_calls, error_groups, calls_over_time.

Durations of real calls cannot be chosen, so most tests insert rows with plain
sqlite3 into a trail created by the service (``hash_chain=False``, so rows
without a hash are legitimate) and assert exact nearest-rank percentiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from finops_audit import (
    AuditConfigError,
    AuditService,
    ErrorGroup,
    TimeBucket,
    ToolStats,
    audit_tool_sync,
)

from ._util import T0, at, insert_rows

GAP = "__audit_gap__"


def _alpha_error(i: int) -> str | None:
    if i % 10:
        return None
    return "ValueError: A" if i % 20 else "ValueError: B"


@pytest.fixture
def known(db_path: Path) -> Iterator[AuditService]:
    """A trail with exact values.

    * alpha: 100 calls at T0+i s (i = 1..100) taking i ms; every tenth fails,
      alternately "ValueError: A" (10, 30, 50, 70, 90) and "B" (20, ..., 100).
    * beta: 5 calls an hour later taking 5, 1, 4, 2, 3 ms; the last fails.
    * a gap marker at T0+30 s "taking" 10 s, which is not a call.
    """
    service = AuditService(db_path, hash_chain=False)
    assert service.count() == 0  # creates the schema
    rows = [(i, "alpha", float(i), _alpha_error(i)) for i in range(1, 101)]
    rows += [
        (3600 + k, "beta", ms, "KeyError: x" if k == 4 else None)
        for k, ms in enumerate([5.0, 1.0, 4.0, 2.0, 3.0])
    ]
    rows.append((30, GAP, 10_000.0, None))
    insert_rows(db_path, rows)
    yield service
    service.close()


ALPHA = ToolStats(
    tool_name="alpha",
    calls=100,
    failures=10,
    failure_rate=0.1,
    avg_ms=50.5,
    p50_ms=50.0,
    p95_ms=95.0,
    p99_ms=99.0,
    max_ms=100.0,
)
BETA = ToolStats(
    tool_name="beta",
    calls=5,
    failures=1,
    failure_rate=0.2,
    avg_ms=3.0,
    p50_ms=3.0,
    p95_ms=5.0,
    p99_ms=5.0,
    max_ms=5.0,
)


def test_tool_stats_exact_nearest_rank_busiest_first_without_gaps(known: AuditService) -> None:
    assert known.tool_stats() == [ALPHA, BETA]


def test_tool_stats_time_window_and_tool_filter(known: AuditService) -> None:
    # alpha calls 41..60 took 41..60 ms; failures at 50 (A) and 60 (B)
    window = known.tool_stats(since=at(41), until=at(60))
    assert window == [
        ToolStats(
            tool_name="alpha",
            calls=20,
            failures=2,
            failure_rate=0.1,
            avg_ms=50.5,
            p50_ms=50.0,
            p95_ms=59.0,
            p99_ms=60.0,
            max_ms=60.0,
        )
    ]
    assert known.tool_stats(tool_name="beta") == [BETA]
    assert known.tool_stats(since=at(3600).isoformat()) == [BETA]  # ISO strings work too
    assert known.tool_stats(until=T0) == []
    assert known.tool_stats(tool_name="nope") == []


def test_single_call_percentiles_are_that_call(known: AuditService) -> None:
    [one] = known.tool_stats(since=at(7), until=at(7))
    assert (one.calls, one.p50_ms, one.p95_ms, one.p99_ms, one.max_ms) == (1, 7.0, 7.0, 7.0, 7.0)


def test_slowest_calls_order_limit_and_filters(known: AuditService) -> None:
    top = known.slowest_calls(limit=3)
    assert [(e.tool_name, e.execution_time_ms) for e in top] == [
        ("alpha", 100.0),
        ("alpha", 99.0),
        ("alpha", 98.0),
    ]  # the 10 s gap marker is not a call
    beta = known.slowest_calls(tool_name="beta")
    assert [e.execution_time_ms for e in beta] == [5.0, 4.0, 3.0, 2.0, 1.0]
    window = known.slowest_calls(limit=2, since=at(10), until=at(20))
    assert [e.execution_time_ms for e in window] == [20.0, 19.0]
    assert len(known.slowest_calls()) == 10  # default limit


def test_error_groups_by_tool_and_error_most_recent_first(known: AuditService) -> None:
    assert known.error_groups() == [
        ErrorGroup(
            tool_name="beta",
            error_message="KeyError: x",
            count=1,
            first_seen=at(3604),
            last_seen=at(3604),
        ),
        ErrorGroup(
            tool_name="alpha",
            error_message="ValueError: B",
            count=5,
            first_seen=at(20),
            last_seen=at(100),
        ),
        ErrorGroup(
            tool_name="alpha",
            error_message="ValueError: A",
            count=5,
            first_seen=at(10),
            last_seen=at(90),
        ),
    ]
    assert [g.error_message for g in known.error_groups(limit=1)] == ["KeyError: x"]
    in_window = known.error_groups(since=at(10), until=at(30))
    assert [(g.error_message, g.count) for g in in_window] == [
        ("ValueError: A", 2),
        ("ValueError: B", 1),
    ]
    assert [g.tool_name for g in known.error_groups(tool_name="alpha")] == ["alpha", "alpha"]


@pytest.mark.parametrize("bucket", ["1m", 60, timedelta(minutes=1)])
def test_calls_per_minute(known: AuditService, bucket: str | int | timedelta) -> None:
    assert known.calls_over_time(bucket=bucket, tool_name="alpha") == [
        TimeBucket(start=T0, calls=59, failures=5),  # calls 1..59
        TimeBucket(start=at(60), calls=41, failures=5),  # calls 60..100
    ]


def test_calls_per_hour_without_gap_markers(known: AuditService) -> None:
    assert known.calls_over_time() == [
        TimeBucket(start=T0, calls=100, failures=10),
        TimeBucket(start=at(3600), calls=5, failures=1),
    ]
    assert known.calls_over_time("1h", since=at(3600)) == [
        TimeBucket(start=at(3600), calls=5, failures=1)
    ]
    midnight = T0.replace(hour=0)
    assert known.calls_over_time("1d") == [TimeBucket(start=midnight, calls=105, failures=11)]


@pytest.mark.asyncio
async def test_async_forms_answer_like_the_sync_ones(known: AuditService) -> None:
    assert await known.atool_stats() == [ALPHA, BETA]
    assert await known.atool_stats(tool_name="beta", since=at(3600)) == [BETA]
    slow = await known.aslowest_calls(limit=2)
    assert [e.execution_time_ms for e in slow] == [100.0, 99.0]
    groups = await known.aerror_groups(limit=2)
    assert [(g.tool_name, g.count) for g in groups] == [("beta", 1), ("alpha", 5)]
    assert await known.acalls_over_time("1h") == [
        TimeBucket(start=T0, calls=100, failures=10),
        TimeBucket(start=at(3600), calls=5, failures=1),
    ]


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda s: s.calls_over_time(bucket="x"), "bucket"),
        (lambda s: s.calls_over_time(bucket=0), "bucket"),
        (lambda s: s.calls_over_time(bucket="0.5s"), "bucket"),
        (lambda s: s.slowest_calls(limit=0), "limit"),
        (lambda s: s.error_groups(limit=0), "limit"),
        (lambda s: s.tool_stats(since="yesterday"), "since"),
        (lambda s: s.tool_stats(since=at(10), until=at(5)), "after until"),
    ],
    ids=["bucket-x", "bucket-0", "bucket-subsecond", "slowest-0", "errors-0", "since", "window"],
)
def test_bad_arguments_raise_value_error_naming_them(
    svc: AuditService, call: object, needle: str
) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        call(svc)  # type: ignore[operator]
    assert isinstance(info.value, AuditConfigError)


def test_stats_of_real_audited_calls(svc: AuditService) -> None:
    @audit_tool_sync(name="fetch_costs", service=svc)
    def fetch_costs(i: int) -> int:
        if i % 4 == 0:
            raise RuntimeError("throttled")
        return i

    @audit_tool_sync(name="list_budgets", service=svc)
    def list_budgets() -> list[str]:
        return []

    for i in range(40):
        try:
            fetch_costs(i)
        except RuntimeError:
            pass
    for _ in range(7):
        list_budgets()

    stats = {s.tool_name: s for s in svc.tool_stats()}
    assert [s.tool_name for s in svc.tool_stats()] == ["fetch_costs", "list_budgets"]
    costs = stats["fetch_costs"]
    assert (costs.calls, costs.failures, costs.failure_rate) == (40, 10, 0.25)
    assert (stats["list_budgets"].calls, stats["list_budgets"].failures) == (7, 0)
    for s in stats.values():
        assert s.p50_ms is not None
        assert s.p95_ms is not None
        assert s.p99_ms is not None
        assert s.max_ms is not None
        assert 0 <= s.p50_ms <= s.p95_ms <= s.p99_ms <= s.max_ms
    [group] = svc.error_groups()
    assert (group.tool_name, group.error_message, group.count) == (
        "fetch_costs",
        "RuntimeError: throttled",
        10,
    )
    assert group.first_seen <= group.last_seen
    assert sum(b.calls for b in svc.calls_over_time("1m")) == 47
    assert sum(b.failures for b in svc.calls_over_time(60)) == 10
    slow = svc.slowest_calls(limit=47)
    times = [e.execution_time_ms for e in slow]
    assert times == sorted(times, reverse=True)  # type: ignore[type-var]
    assert times[0] == max(s.max_ms for s in stats.values())  # type: ignore[type-var]
