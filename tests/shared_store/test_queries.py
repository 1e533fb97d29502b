"""Identical answers from both stores: filters, order, paging, counts, analytics.

Each test runs against SQLite and PostgreSQL (the ``store`` fixture) and
checks the answer against the reference entries, or compares the two stores
side by side (``both``) where an answer is computed in SQL (analytics).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
import pytest

from finops_audit import AuditLogEntry, AuditStatus
from finops_audit.redaction import REDACTED, Redactor
from finops_audit.storage.base import AuditReader, LogQuery

from .conftest import ACCOUNT, HMAC_KEY, REPLICA, SECRET

pytestmark = pytest.mark.asyncio

Pick = Callable[[AuditLogEntry], bool]


def plain(entries: list[AuditLogEntry]) -> list[AuditLogEntry]:
    """Entries without ``replica_id`` (which only the central store knows)."""
    return [e.model_copy(update={"replica_id": None}) for e in entries]


def newest_first(entries: list[AuditLogEntry]) -> list[AuditLogEntry]:
    return sorted(entries, key=lambda e: (e.timestamp, e.id), reverse=True)


def check_origin(kind: str, entries: list[AuditLogEntry]) -> None:
    expected = REPLICA if kind == "postgres" else None
    assert {e.replica_id for e in entries} <= {expected}


def stored_text(entry: AuditLogEntry) -> str:
    return orjson.dumps(entry.parameters).decode()


def pseudonym(value: str) -> str:
    return Redactor(hmac_key=HMAC_KEY).pseudonym(value)


async def everything(store: AuditReader) -> list[AuditLogEntry]:
    return await store.page_after(LogQuery(limit=100_000), 0)


# ---------------------------------------------------------------------- the trail itself


async def test_every_entry_reads_the_same(
    store: AuditReader, kind: str, fleet_entries: list[AuditLogEntry]
) -> None:
    got = await everything(store)
    check_origin(kind, got)
    assert plain(got) == fleet_entries
    assert len(got) == 49
    assert all(e.event_id is not None and len(e.event_id) == 32 for e in got)


async def test_the_trail_has_what_the_suite_needs(fleet_entries: list[AuditLogEntry]) -> None:
    """Guards the fixture: redaction, pseudonyms, caller fields, failures, unicode."""
    texts = [stored_text(e) for e in fleet_entries]
    assert not any(SECRET in t for t in texts)
    assert any(REDACTED in t for t in texts)
    assert not any(ACCOUNT in t for t in texts)
    assert any(pseudonym(ACCOUNT) in t for t in texts)
    assert {e.user for e in fleet_entries} == {"alice", "bob", "carol", None}
    assert any(e.labels == {"team": "finops", "env": "prod"} for e in fleet_entries)
    assert sum(e.status is AuditStatus.FAILURE for e in fleet_entries) >= 5
    assert any(e.tool_name == "résumé_東京" for e in fleet_entries)
    assert len({e.timestamp for e in fleet_entries}) == len(fleet_entries)


async def test_entries_in_both_stores_are_equal(
    both: tuple[AuditReader, AuditReader],
) -> None:
    local, central = both
    assert plain(await everything(central)) == await everything(local)


# ---------------------------------------------------------------------- get_logs


@pytest.mark.parametrize(
    ("limit", "offset"), [(100, 0), (10, 0), (10, 5), (7, 45), (5, 1000), (1, 48)]
)
async def test_newest_first_with_limit_and_offset(
    store: AuditReader, fleet_entries: list[AuditLogEntry], limit: int, offset: int
) -> None:
    got = await store.query(LogQuery(limit=limit, offset=offset))
    assert plain(got) == newest_first(fleet_entries)[offset : offset + limit]


def _tool(name: str) -> tuple[dict[str, Any], Pick]:
    return {"tool_name": name}, lambda e: e.tool_name == name


def _caller(column: str, value: str) -> tuple[dict[str, Any], Pick]:
    return {"caller": ((column, value),)}, lambda e: getattr(e, column) == value


FILTERS: dict[str, tuple[dict[str, Any], Pick]] = {
    "tool-common": _tool("list_policies"),
    "tool-unicode": _tool("résumé_東京"),
    "tool-rare": _tool("rare_export"),
    "tool-missing": _tool("no_such_tool"),
    "failures": (
        {"status": AuditStatus.FAILURE},
        lambda e: e.status is AuditStatus.FAILURE,
    ),
    "successes": (
        {"status": AuditStatus.SUCCESS},
        lambda e: e.status is AuditStatus.SUCCESS,
    ),
    "user": _caller("user", "alice"),
    "user-unknown": _caller("user", "mallory"),
    "client": _caller("client_name", "cursor"),
    "session": _caller("session_id", "s1"),
    "request": _caller("request_id", "req-5"),
    "tool-and-status": (
        {"tool_name": "check_tags", "status": AuditStatus.FAILURE},
        lambda e: e.tool_name == "check_tags" and e.status is AuditStatus.FAILURE,
    ),
    "tool-and-user": (
        {"tool_name": "estimate_cost", "caller": (("user", "bob"),)},
        lambda e: e.tool_name == "estimate_cost" and e.user == "bob",
    ),
    "two-callers": (
        {"caller": (("client_name", "claude-desktop"), ("session_id", "s1"))},
        lambda e: e.client_name == "claude-desktop" and e.session_id == "s1",
    ),
}


@pytest.mark.parametrize("case", list(FILTERS))
async def test_filters(
    store: AuditReader, kind: str, fleet_entries: list[AuditLogEntry], case: str
) -> None:
    fields, pick = FILTERS[case]
    expected = newest_first([e for e in fleet_entries if pick(e)])
    got = await store.query(LogQuery(limit=1000, **fields))
    check_origin(kind, got)
    assert plain(got) == expected
    assert await store.count(LogQuery(limit=1, **fields)) == len(expected)
    if not case.endswith(("missing", "unknown")):
        assert expected, "the fixture should give this filter something to find"


@pytest.mark.parametrize(
    ("first", "last"), [(10, 30), (0, 48), (20, 20), (48, 48), (0, 0), (30, 10)]
)
async def test_time_windows_are_inclusive(
    store: AuditReader, fleet_entries: list[AuditLogEntry], first: int, last: int
) -> None:
    since, until = fleet_entries[first].timestamp, fleet_entries[last].timestamp
    expected = newest_first([e for e in fleet_entries if since <= e.timestamp <= until])
    got = await store.query(LogQuery(since=since, until=until, limit=1000))
    assert plain(got) == expected
    assert len(expected) == max(0, last - first + 1)
    assert plain(await store.query(LogQuery(since=since, limit=1000))) == newest_first(
        [e for e in fleet_entries if e.timestamp >= since]
    )
    assert plain(await store.query(LogQuery(until=until, limit=1000))) == newest_first(
        [e for e in fleet_entries if e.timestamp <= until]
    )


async def test_window_with_other_filters_and_paging(
    store: AuditReader, fleet_entries: list[AuditLogEntry]
) -> None:
    since, until = fleet_entries[5].timestamp, fleet_entries[40].timestamp
    query = LogQuery(since=since, until=until, status=AuditStatus.SUCCESS, limit=4, offset=3)
    expected = newest_first(
        [
            e
            for e in fleet_entries
            if since <= e.timestamp <= until and e.status is AuditStatus.SUCCESS
        ]
    )
    assert plain(await store.query(query)) == expected[3:7]
    assert await store.count(query) == len(expected)


def _fold(text: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in text)


def _values(value: Any) -> list[str]:
    """The texts ``parameter_value`` searches: strings and 64-bit integers, at any depth."""
    if isinstance(value, dict):
        return [text for item in value.values() for text in _values(item)]
    if isinstance(value, list):
        return [text for item in value for text in _values(item)]
    if isinstance(value, str):
        return [value]
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return [str(value)]
    return []


def _needle_matches(entry: AuditLogEntry, needle: str) -> bool:
    """The promise: a value (never a key) contains the needle, ASCII case ignored."""
    return any(_fold(needle) in _fold(text) for text in _values(entry.parameters))


NEEDLES = [
    "eu-west-3",
    "EU-WEST-3",  # SQLite's LIKE ignores the case of ASCII letters; so must PostgreSQL
    "100%_off",  # LIKE metacharacters are literal: "100x_off" and "1000_offers" must not match
    "_off",
    "%",
    'a "quoted"',  # escaped in the JSON text
    "back\\slash",
    "Zürich ☃ 東京",
    "ZÜRICH",  # no case folding beyond ASCII, in either store
    "line1\nline2",
    "tab\there",
    "k\\s",  # a backslash in a value is literal, not LIKE's escape character
    "\\",
    'quoted" w',  # a quote inside a value
    "[REDACTED]",
    "not there at all",
    "1",  # nested: only inside the tags object
]

#: Keys (and key-like text) that are in the stored JSON but in no value.
KEYS = ["region", "REGION", "tags", "account_id", "api_key", "amount", '"region":"', "gion"]


@pytest.mark.parametrize("needle", NEEDLES, ids=repr)
async def test_parameter_value(
    store: AuditReader, fleet_entries: list[AuditLogEntry], needle: str
) -> None:
    expected = newest_first([e for e in fleet_entries if _needle_matches(e, needle)])
    got = await store.query(LogQuery(parameter_value=needle, limit=1000))
    assert plain(got) == expected
    if needle in ("100%_off", "eu-west-3", "k\\s", "1"):
        assert expected
        assert all(any(needle in v for v in _values(e.parameters)) for e in expected)


@pytest.mark.parametrize("needle", KEYS, ids=repr)
async def test_parameter_value_never_matches_keys(
    store: AuditReader, fleet_entries: list[AuditLogEntry], needle: str
) -> None:
    holders = [e for e in fleet_entries if _fold(needle) in _fold(stored_text(e))]
    assert holders  # the text is in the stored JSON, as a key (or part of one)
    expected = newest_first([e for e in fleet_entries if _needle_matches(e, needle)])
    got = await store.query(LogQuery(parameter_value=needle, limit=1000))
    assert plain(got) == expected
    if needle in ("tags", "account_id", "api_key", "amount", '"region":"', "gion"):
        assert got == []
    assert await store.count(LogQuery(parameter_value=needle)) == len(expected)


async def test_parameter_value_finds_nested_values(
    store: AuditReader, fleet_entries: list[AuditLogEntry]
) -> None:
    """``check_tags`` holds its notes inside ``tags``: a note is found there too."""
    got = await store.query(LogQuery(parameter_value="100x_off", limit=1000))
    tools = {e.tool_name for e in got}
    assert "check_tags" in tools
    assert all(
        "100x_off" in str(e.parameters.get("tags", {})) for e in got if e.tool_name == "check_tags"
    )
    assert plain(got) == newest_first([e for e in fleet_entries if _needle_matches(e, "100x_off")])


@pytest.mark.parametrize(
    ("needle", "ids"),
    [
        ("12", lambda p: p.get("n") == 12),  # an integer, by its digits
        ("1", lambda p: True),  # every chained row holds [1, ...]; legacy {"legacy": 1}
        ("2.5", lambda p: False),  # fractions never match
        ("1180591620717411303424", lambda p: False),  # beyond 64 bits: a float to SQLite
        ("100000000000000000000", lambda p: False),  # 1e20 is a float
        ("1e20", lambda p: False),
        ("big", lambda p: False),  # keys
        ("float", lambda p: False),
        ("LAST", lambda p: p.get("z") == "last"),
        ("true", lambda p: False),
        ("null", lambda p: False),
    ],
    ids=lambda v: repr(v) if isinstance(v, str) else "",
)
async def test_parameter_value_numbers(
    history_store: AuditReader,
    history_entries: list[AuditLogEntry],
    needle: str,
    ids: Callable[[dict[str, Any]], bool],
) -> None:
    expected = newest_first([e for e in history_entries if _needle_matches(e, needle)])
    got = plain(await history_store.query(LogQuery(parameter_value=needle, limit=1000)))
    assert got == expected
    chained = [e for e in history_entries if "legacy" not in e.parameters]
    assert [e for e in got if "legacy" not in e.parameters] == newest_first(
        [e for e in chained if ids(e.parameters)]
    )


async def test_parameter_value_finds_pseudonyms_but_never_secrets(
    store: AuditReader, fleet_entries: list[AuditLogEntry]
) -> None:
    query = LogQuery(parameter_value=ACCOUNT, pseudonym=pseudonym(ACCOUNT), limit=1000)
    expected = newest_first([e for e in fleet_entries if pseudonym(ACCOUNT) in stored_text(e)])
    assert expected
    assert plain(await store.query(query)) == expected
    assert await store.query(replace(query, pseudonym=None)) == []
    assert await store.query(LogQuery(parameter_value=SECRET, limit=1000)) == []


async def test_parameter_value_with_other_filters(
    store: AuditReader, fleet_entries: list[AuditLogEntry]
) -> None:
    query = LogQuery(
        tool_name="check_tags", parameter_value="mars", caller=(("user", "bob"),), limit=1000
    )
    expected = newest_first(
        [
            e
            for e in fleet_entries
            if e.tool_name == "check_tags" and "mars" in stored_text(e) and e.user == "bob"
        ]
    )
    assert plain(await store.query(query)) == expected
    assert await store.count(query) == len(expected)


# ---------------------------------------------------------------------- keyset paging


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"tool_name": "check_tags"},
        {"status": AuditStatus.FAILURE},
        {"caller": (("user", "alice"),)},
    ],
    ids=["all", "tool", "failures", "user"],
)
async def test_keyset_pages_cover_everything_once(
    store: AuditReader, fleet_entries: list[AuditLogEntry], fields: dict[str, Any]
) -> None:
    query = LogQuery(limit=5, **fields)
    seen: list[AuditLogEntry] = []
    after = 0
    while True:
        page = await store.page_after(query, after)
        seen.extend(page)
        if len(page) < query.limit:
            break
        after = page[-1].id
    expected = [e for e in fleet_entries if all(_holds(e, k, v) for k, v in fields.items())]
    assert plain(seen) == expected
    assert [e.id for e in seen] == sorted({e.id for e in seen})


def _holds(entry: AuditLogEntry, key: str, value: Any) -> bool:
    if key == "caller":
        return all(getattr(entry, column) == text for column, text in value)
    return bool(getattr(entry, key) == value)


async def test_rows_after_are_the_same_dicts(
    both: tuple[AuditReader, AuditReader], fleet_entries: list[AuditLogEntry]
) -> None:
    local, central = both
    query = LogQuery(limit=9)
    after = 0
    pages = 0
    while True:
        mine = await local.rows_after(query, after)
        theirs = await central.rows_after(query, after)
        assert {row.pop("replica_id") for row in theirs} <= {REPLICA}
        assert theirs == mine
        pages += 1
        if len(mine) < query.limit:
            break
        after = mine[-1]["id"]
    assert pages == math.ceil((len(fleet_entries) + 1) / 9)


async def test_rows_after_shape(store: AuditReader, fleet_entries: list[AuditLogEntry]) -> None:
    rows = await store.rows_after(LogQuery(limit=3), 10)
    assert [r["id"] for r in rows] == [11, 12, 13]
    for row, entry in zip(rows, fleet_entries[10:13], strict=True):
        assert row["timestamp"].endswith("Z")
        assert datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")) == entry.timestamp
        assert row["parameters"] == entry.parameters
        assert row["labels"] == entry.labels
        assert row["event_id"] == entry.event_id
        orjson.dumps(row)  # JSON-ready


# ---------------------------------------------------------------------- analytics


WINDOWS: dict[str, Callable[[list[AuditLogEntry]], dict[str, Any]]] = {
    "all": lambda entries: {},
    "tool": lambda entries: {"tool_name": "estimate_cost"},
    "window": lambda entries: {"since": entries[8].timestamp, "until": entries[33].timestamp},
    "empty": lambda entries: {"tool_name": "no_such_tool"},
}


@pytest.mark.parametrize("window", list(WINDOWS))
async def test_analytics_are_equal(
    both: tuple[AuditReader, AuditReader], fleet_entries: list[AuditLogEntry], window: str
) -> None:
    local, central = both
    query = LogQuery(limit=5, **WINDOWS[window](fleet_entries))
    assert await central.tool_stats(query) == await local.tool_stats(query)
    assert plain(await central.slowest(query)) == await local.slowest(query)
    assert await central.error_groups(query) == await local.error_groups(query)
    for seconds in (1, 60, 3600, 86400):
        assert await central.time_buckets(query, seconds) == await local.time_buckets(
            query, seconds
        )


async def test_tool_stats_numbers(store: AuditReader, fleet_entries: list[AuditLogEntry]) -> None:
    stats = {s.tool_name: s for s in await store.tool_stats(LogQuery())}
    assert sum(s.calls for s in stats.values()) == len(fleet_entries)
    checks = stats["check_tags"]
    calls = [e for e in fleet_entries if e.tool_name == "check_tags"]
    assert checks.calls == len(calls)
    assert checks.failures == sum(e.status is AuditStatus.FAILURE for e in calls)
    durations = sorted(e.execution_time_ms for e in calls if e.execution_time_ms is not None)
    assert checks.max_ms == durations[-1]
    assert checks.p50_ms == durations[math.ceil(0.5 * len(durations)) - 1]
    assert stats["rare_export"].calls == 1
