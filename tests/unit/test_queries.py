"""``get_logs`` / ``aget_logs``: filters, order, paging, argument validation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from finops_audit import AuditLogEntry, AuditService, AuditStatus, audit_tool_sync

TOOLS = ("list_policies", "check_tags", "estimate_cost")


@pytest.fixture
def trail(svc: AuditService) -> list[AuditLogEntry]:
    """30 calls round-robin over three tools, every fifth one failing; newest first."""
    tools = {}
    for name in TOOLS:

        @audit_tool_sync(name=name, service=svc)
        def tool(i: int) -> int:
            if i % 5 == 0:
                raise ValueError(f"bad input {i}")
            return i

        tools[name] = tool
    for i in range(30):
        try:
            tools[TOOLS[i % 3]](i)
        except ValueError:
            pass
    entries = svc.get_logs(limit=1000)
    assert len(entries) == 30
    return entries


def test_newest_first(trail: list[AuditLogEntry]) -> None:
    assert [e.parameters["i"] for e in trail] == list(range(29, -1, -1))
    stamps = [e.timestamp for e in trail]
    assert stamps == sorted(stamps, reverse=True)


def test_default_limit_is_100(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def tool(i: int) -> int:
        return i

    for i in range(105):
        tool(i)
    entries = svc.get_logs()
    assert len(entries) == 100
    assert entries[0].parameters == {"i": 104}


def test_filter_by_tool_name(svc: AuditService, trail: list[AuditLogEntry]) -> None:
    for name in TOOLS:
        got = svc.get_logs(tool_name=name, limit=1000)
        assert got == [e for e in trail if e.tool_name == name]
        assert len(got) == 10
    assert svc.get_logs(tool_name="no_such_tool") == []


@pytest.mark.parametrize("status", [AuditStatus.FAILURE, "FAILURE", "failure", "Failure"], ids=repr)
def test_filter_by_failure_status(
    svc: AuditService, trail: list[AuditLogEntry], status: object
) -> None:
    got = svc.get_logs(status=status, limit=1000)
    assert got == [e for e in trail if e.status is AuditStatus.FAILURE]
    assert len(got) == 6
    assert all(e.error_message and e.error_message.startswith("ValueError: bad input") for e in got)


@pytest.mark.parametrize("status", [AuditStatus.SUCCESS, "SUCCESS", "success"], ids=repr)
def test_filter_by_success_status(
    svc: AuditService, trail: list[AuditLogEntry], status: object
) -> None:
    got = svc.get_logs(status=status, limit=1000)
    assert got == [e for e in trail if e.status is AuditStatus.SUCCESS]
    assert len(got) == 24


def test_filters_combine(svc: AuditService, trail: list[AuditLogEntry]) -> None:
    got = svc.get_logs(tool_name="list_policies", status="FAILURE", limit=1000)
    assert [e.parameters["i"] for e in got] == [15, 0]


def test_since_and_until_are_inclusive_datetimes(
    svc: AuditService, trail: list[AuditLogEntry]
) -> None:
    since, until = trail[20].timestamp, trail[5].timestamp
    got = svc.get_logs(since=since, until=until, limit=1000)
    assert got == [e for e in trail if since <= e.timestamp <= until]
    assert trail[20] in got
    assert trail[5] in got
    exact = svc.get_logs(since=since, until=since)
    assert trail[20] in exact
    assert all(e.timestamp == since for e in exact)


def test_since_alone_and_until_alone(svc: AuditService, trail: list[AuditLogEntry]) -> None:
    pivot = trail[10].timestamp
    assert svc.get_logs(since=pivot, limit=1000) == [e for e in trail if e.timestamp >= pivot]
    assert svc.get_logs(until=pivot, limit=1000) == [e for e in trail if e.timestamp <= pivot]


def test_since_and_until_as_iso_strings(svc: AuditService, trail: list[AuditLogEntry]) -> None:
    since, until = trail[20].timestamp, trail[5].timestamp
    expected = [e for e in trail if since <= e.timestamp <= until]
    assert svc.get_logs(since=since.isoformat(), until=until.isoformat(), limit=1000) == expected
    zulu = "%Y-%m-%dT%H:%M:%S.%fZ"
    assert (
        svc.get_logs(since=since.strftime(zulu), until=until.strftime(zulu), limit=1000) == expected
    )


def test_other_time_zones_mean_the_same_instant(
    svc: AuditService, trail: list[AuditLogEntry]
) -> None:
    since, until = trail[20].timestamp, trail[5].timestamp
    expected = [e for e in trail if since <= e.timestamp <= until]
    tokyo = timezone(timedelta(hours=9))
    got = svc.get_logs(since=since.astimezone(tokyo), until=until.astimezone(tokyo).isoformat())
    assert got == expected


def test_naive_datetimes_are_taken_as_utc(svc: AuditService, trail: list[AuditLogEntry]) -> None:
    since = trail[10].timestamp
    naive = since.replace(tzinfo=None)
    assert svc.get_logs(since=naive, limit=1000) == [e for e in trail if e.timestamp >= since]


def test_a_range_in_the_future_is_empty(svc: AuditService, trail: list[AuditLogEntry]) -> None:
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert svc.get_logs(since=future) == []


def test_limit_and_offset_page_through_everything(
    svc: AuditService, trail: list[AuditLogEntry]
) -> None:
    pages = [svc.get_logs(limit=7, offset=off) for off in range(0, 35, 7)]
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    assert [e for page in pages for e in page] == trail
    assert svc.get_logs(limit=1) == trail[:1]
    assert svc.get_logs(offset=30) == []


@pytest.mark.asyncio
async def test_aget_logs_matches_get_logs(svc: AuditService, trail: list[AuditLogEntry]) -> None:
    kwargs = {"tool_name": "check_tags", "status": "success", "limit": 3, "offset": 1}
    assert await svc.aget_logs(**kwargs) == svc.get_logs(**kwargs)


@pytest.mark.parametrize(
    "name",
    [
        "x'; DROP TABLE audit_logs; --",
        'quote"d',
        "100%",
        "a_b",
        "back\\slash",
        "ünïcødé 工具",
        "",
    ],
)
def test_tool_names_with_sql_metacharacters_are_just_names(svc: AuditService, name: str) -> None:
    @audit_tool_sync(name=name or "placeholder", service=svc)
    def odd() -> None:
        return None

    @audit_tool_sync(name="axb", service=svc)
    def lookalike() -> None:
        return None

    odd()
    lookalike()
    if not name:
        assert svc.get_logs(tool_name="") == []
        return
    [entry] = svc.get_logs(tool_name=name)
    assert entry.tool_name == name
    assert len(svc.get_logs()) == 2  # the table is still there and whole


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"status": "bogus"}, ["status", "SUCCESS", "FAILURE"]),
        ({"limit": -1}, ["limit"]),
        ({"limit": 0}, ["limit"]),
        ({"limit": 10**9}, ["limit"]),
        ({"limit": "10"}, ["limit"]),
        ({"offset": -1}, ["offset"]),
        (
            {"since": "2026-11-28T05:00:00Z", "until": "2026-11-28T04:00:00Z"},
            ["since", "until"],
        ),
        ({"since": "not a date"}, ["since", "not a date"]),
        ({"until": "yesterday"}, ["until", "yesterday"]),
        ({"since": 12345}, ["since"]),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
@pytest.mark.asyncio
async def test_bad_arguments_raise_value_error_with_a_clear_message(
    svc: AuditService, kwargs: dict[str, object], words: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        svc.get_logs(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value), str(info.value)
    with pytest.raises(ValueError) as ainfo:
        await svc.aget_logs(**kwargs)  # type: ignore[arg-type]
    assert str(ainfo.value) == str(info.value)
