"""Guarantee 6: hostile input is recorded safely.

Every value in the catalogue is passed to a tool that returns its argument:
the very same object comes back, nothing raises, and ``get_logs`` returns an
entry whose parameters hold a readable, bounded stand-in (checked per case),
which can itself be serialised again (``model_dump_json``). Then exceptions
whose ``__str__`` raises, query-argument validation, and tool names made of
SQL metacharacters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import logging
import math
import os
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pydantic import BaseModel

from finops_audit import (
    AuditError,
    AuditService,
    AuditStatus,
    AuditTimeoutError,
    audit_tool,
    audit_tool_sync,
)
from tests.guarantees._support import connect

MAX_PARAM_BYTES = 8192


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditService]:
    service = AuditService(
        tmp_path_factory.mktemp("hostile") / "audit.db", max_param_bytes=MAX_PARAM_BYTES
    )
    yield service
    service.close()


# --------------------------------------------------------------------------- the catalogue


@dataclass
class Invoice:
    number: int
    tags: set[str]


class Region(enum.Enum):
    EU = "eu-west-1"


class Severity(enum.IntEnum):
    HIGH = 3


class Budget(BaseModel):
    name: str
    limit: Decimal
    starts: datetime


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


class NothingPrints:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")

    def __str__(self) -> str:
        raise RuntimeError("str is broken")


class Plain:
    def __init__(self) -> None:
        self.secret_sauce = 42


def cyclic_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    value["self"] = value
    return value


def deep_list(depth: int = 10_000) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(depth):
        child: list[Any] = []
        node.append(child)
        node = child
    return root


def text(stored: Any) -> str:
    return json.dumps(stored, ensure_ascii=False)


def is_typed(stored: Any, type_name: str, *inside: str) -> bool:
    return (
        isinstance(stored, dict)
        and stored.get("$type") == type_name
        and all(part in text(stored) for part in inside)
    )


AWARE = datetime(2026, 11, 28, 4, 5, 6, 789, tzinfo=timezone(timedelta(hours=2)))
NAIVE = datetime(2026, 11, 28, 4, 5, 6)
BIG_DECIMAL = Decimal("12345678901234567890.000000001")
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
BUDGET = Budget(name="q4", limit=Decimal("1000.50"), starts=AWARE)
TEN_MB = "x" * 10_000_000
NAN = float("nan")

Check = Callable[[Any], bool]


def bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"BUG: {reason}")


#: (id, a factory for the value, a check of what ``get_logs`` returns for it)
CASES: list[Any] = [
    ("set", lambda: {"b", "a", "c"}, lambda s: s == ["a", "b", "c"]),
    ("frozenset", lambda: frozenset({3, 1, 2}), lambda s: s == [1, 2, 3]),
    ("unorderable-set", lambda: {1, "a"}, lambda s: sorted(map(str, s)) == ["1", "a"]),
    (
        "bytes",
        lambda: b"\x00\xff\xfeaudit",
        lambda s: is_typed(s, "bytes") and base64.b64decode(s["base64"]) == b"\x00\xff\xfeaudit",
    ),
    (
        "bytearray",
        lambda: bytearray(b"\x01ab"),
        lambda s: is_typed(s, "bytearray") and base64.b64decode(s["base64"]) == b"\x01ab",
    ),
    (
        "memoryview",
        lambda: memoryview(b"mv"),
        lambda s: is_typed(s, "memoryview") and base64.b64decode(s["base64"]) == b"mv",
    ),
    ("datetime-aware", lambda: AWARE, lambda s: datetime.fromisoformat(s) == AWARE),
    (
        "datetime-naive",
        lambda: NAIVE,
        lambda s: datetime.fromisoformat(s) == NAIVE and datetime.fromisoformat(s).tzinfo is None,
    ),
    ("date", lambda: date(2026, 2, 28), lambda s: s == "2026-02-28"),
    ("time", lambda: time(4, 5, 6), lambda s: s == "04:05:06"),
    (
        "timedelta",
        lambda: timedelta(days=1, seconds=5),
        lambda s: is_typed(s, "timedelta", "days=1", "seconds=5"),
    ),
    ("decimal", lambda: BIG_DECIMAL, lambda s: Decimal(s) == BIG_DECIMAL),
    ("uuid", lambda: UID, lambda s: uuid.UUID(s) == UID),
    ("dataclass", lambda: Invoice(7, {"x"}), lambda s: s == {"number": 7, "tags": ["x"]}),
    (
        "pydantic",
        lambda: BUDGET,
        lambda s: (
            s["name"] == "q4"
            and Decimal(s["limit"]) == Decimal("1000.50")
            and datetime.fromisoformat(s["starts"].replace("Z", "+00:00")) == AWARE
        ),
    ),
    ("enum", lambda: Region.EU, lambda s: s == "eu-west-1"),
    ("intenum", lambda: Severity.HIGH, lambda s: s == 3),
    ("path", lambda: Path("/var/log/audit"), lambda s: "/var/log/audit" in text(s)),
    ("purepath", lambda: PurePosixPath("/srv/x"), lambda s: "/srv/x" in text(s)),
    ("complex", lambda: 1 + 2j, lambda s: is_typed(s, "complex", "(1+2j)")),
    (
        "repr-raises",
        ReprRaises,
        lambda s: is_typed(s, "ReprRaises") and "unrepresentable" in text(s),
    ),
    (
        "str-and-repr-raise",
        NothingPrints,
        lambda s: is_typed(s, "NothingPrints") and "unrepresentable" in text(s),
    ),
    ("plain-object", Plain, lambda s: is_typed(s, "Plain", "Plain object")),
    ("cyclic-list", cyclic_list, lambda s: s[0] == 1 and "$cycle" in text(s[1])),
    ("cyclic-dict", cyclic_dict, lambda s: s["a"] == 1 and "$cycle" in text(s["self"])),
    (
        "10000-deep-list",
        deep_list,
        lambda s: isinstance(s, list) and "$truncated" in text(s) and len(text(s)) < 4096,
    ),
    ("nan", lambda: NAN, lambda s: s == "nan"),
    ("inf", lambda: math.inf, lambda s: s == "inf"),
    ("minus-inf", lambda: -math.inf, lambda s: s == "-inf"),
    pytest.param(
        "nested-non-finite",
        lambda: {"ratios": [NAN, math.inf, -math.inf], "ok": 1.5},
        lambda s: s == {"ratios": ["nan", "inf", "-inf"], "ok": 1.5},
        id="nested-non-finite",
    ),
    (
        "lone-surrogate-value",
        lambda: "cost\ud800center",
        lambda s: isinstance(s, str) and s.startswith("cost") and "ud800" in s,
    ),
    pytest.param(
        "lone-surrogate-key",
        lambda: {"\udc80tag": 1},
        lambda s: list(s.values()) == [1] and "udc80" in next(iter(s)),
        id="lone-surrogate-key",
    ),
    ("int-keys", lambda: {1: "a", 2: "b"}, lambda s: s == {"1": "a", "2": "b"}),
    ("tuple-key", lambda: {("eu", 1): "x"}, lambda s: s == {"('eu', 1)": "x"}),
    ("none-key", lambda: {None: 1}, lambda s: s in ({"null": 1}, {"None": 1})),
    ("frozenset-key", lambda: {frozenset({1}): "x"}, lambda s: s == {"frozenset({1})": "x"}),
    pytest.param(
        "colliding-keys",
        lambda: {1: "int", "1": "str"},
        lambda s: sorted(s.values()) == ["int", "str"],
        id="colliding-keys",
    ),
    pytest.param(
        "huge-int",
        lambda: 2**100,
        lambda s: str(s) == str(2**100),
        id="huge-int",
    ),
    (
        "generator",
        lambda: (i for i in range(3)),
        lambda s: is_typed(s, "generator", "<generator object"),
    ),
    ("lambda", lambda: lambda: 1, lambda s: is_typed(s, "function", "<lambda>")),
    ("module", lambda: os, lambda s: is_typed(s, "module", "'os'")),
    ("class", lambda: int, lambda s: "<class 'int'>" in text(s)),
    ("range", lambda: range(3), lambda s: is_typed(s, "range", "range(0, 3)")),
    (
        "exception-instance",
        lambda: ValueError("bad region"),
        lambda s: is_typed(s, "ValueError", "bad region"),
    ),
    ("lock", threading.Lock, lambda s: is_typed(s, "lock", "lock object")),
    ("mappingproxy", lambda: types.MappingProxyType({"k": 1}), lambda s: s == {"k": 1}),
    ("none", lambda: None, lambda s: s is None),
]


def case_params() -> list[Any]:
    out = []
    for case in CASES:
        if hasattr(case, "marks"):  # already a pytest.param
            out.append(case)
        else:
            out.append(pytest.param(*case, id=case[0]))
    return out


@pytest.mark.parametrize(("case_id", "make", "check"), case_params())
def test_hostile_parameter_is_recorded_safely(
    svc: AuditService,
    caplog: pytest.LogCaptureFixture,
    case_id: str,
    make: Callable[[], Any],
    check: Check,
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    name = f"hostile.{case_id}"

    @audit_tool_sync(name=name, service=svc)
    def echo(value: Any) -> Any:
        return value

    value = make()
    assert echo(value) is value
    [entry] = svc.get_logs(tool_name=name)
    assert entry.status is AuditStatus.SUCCESS
    stored = entry.parameters["value"]
    assert check(stored), stored
    entry.model_dump_json()  # the entry a reader gets back can be serialised again
    assert_bounded_row(svc, name)
    assert [r.getMessage() for r in caplog.records] == []


def assert_bounded_row(svc: AuditService, name: str) -> None:
    with connect(svc.db_path) as conn:
        [(raw,)] = conn.execute("SELECT parameters FROM audit_logs WHERE tool_name = ?", (name,))
    assert len(raw.encode("utf-8", "surrogatepass")) <= MAX_PARAM_BYTES
    json.loads(raw)


def test_ten_megabyte_string_is_truncated_with_a_marker(svc: AuditService) -> None:
    @audit_tool_sync(name="hostile.10mb", service=svc)
    def upload(report: str, region: str = "eu") -> str:
        return report

    assert upload(TEN_MB, region="eu") is TEN_MB
    [entry] = svc.get_logs(tool_name="hostile.10mb")
    params = entry.parameters
    assert params["region"] == "eu"  # the neighbour is kept
    report = params["report"]
    assert report["$truncated"] is True
    assert report["original_bytes"] == 10_000_000
    assert report["preview"].startswith("xxxx")
    assert len(report["preview"]) > MAX_PARAM_BYTES // 2
    assert_bounded_row(svc, "hostile.10mb")


def test_hostile_values_in_an_async_tool(svc: AuditService) -> None:
    @audit_tool(name="hostile.async", service=svc)
    async def echo(value: Any, **extra: Any) -> Any:
        return value

    value = cyclic_dict()
    assert asyncio.run(echo(value, **{"odd-kwarg": {2, 1}})) is value
    [entry] = svc.get_logs(tool_name="hostile.async")
    assert entry.parameters["value"]["a"] == 1
    assert entry.parameters["odd-kwarg"] == [1, 2]
    entry.model_dump_json()


# --------------------------------------------------------------------------- exceptions


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str is broken")


class NothingWorks(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str is broken")

    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


@pytest.mark.parametrize("exc_type", [Unprintable, NothingWorks])
def test_exception_whose_str_raises(svc: AuditService, exc_type: type[Exception]) -> None:
    original = exc_type()
    name = f"hostile.raises.{exc_type.__name__}"

    @audit_tool_sync(name=name, service=svc)
    def sync_tool() -> None:
        raise original

    @audit_tool(name=name, service=svc)
    async def async_tool() -> None:
        raise original

    with pytest.raises(exc_type) as sync_raised:
        sync_tool()
    with pytest.raises(exc_type) as async_raised:
        asyncio.run(async_tool())
    assert sync_raised.value is original
    assert async_raised.value is original
    entries = svc.get_logs(tool_name=name)
    assert [e.status for e in entries] == [AuditStatus.FAILURE] * 2
    for entry in entries:
        assert entry.error_message is not None
        assert entry.error_message.startswith(exc_type.__name__)
        assert "<unprintable" in entry.error_message


def test_error_message_with_a_lone_surrogate_does_not_jam_the_writer(tmp_path: Path) -> None:
    # e.g. a path decoded with surrogateescape, quoted in an exception message
    svc = AuditService(tmp_path / "audit.db", close_timeout=0.2)

    @audit_tool_sync(service=svc)
    def read_report(path: str) -> None:
        raise ValueError("cannot read " + path)

    @audit_tool_sync(service=svc)
    def ok(seq: int) -> int:
        return seq

    try:
        with pytest.raises(ValueError, match="cannot read"):
            read_report("/data/report\udcff.csv")
        for seq in range(5):
            ok(seq)
        svc.flush(timeout=2)
        assert len(svc.get_logs(tool_name="ok")) == 5
        [failure] = svc.get_logs(tool_name="read_report")
        assert "udcff" in (failure.error_message or "")
    finally:
        with contextlib.suppress(AuditError, AuditTimeoutError):
            svc.close(timeout=30)


# --------------------------------------------------------------------------- queries


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "DONE"}, "status='DONE' is invalid; use one of: SUCCESS, FAILURE"),
        ({"status": 3}, "status=3 is invalid"),
        ({"limit": -1}, "limit=-1 must be at least 1"),
        ({"limit": 0}, "limit=0 must be at least 1"),
        ({"limit": 10**12}, "limit=1000000000000 is more than"),
        ({"limit": "10"}, "limit must be an integer"),
        ({"limit": True}, "limit must be an integer"),
        ({"offset": -5}, "offset=-5 must be at least 0"),
        (
            {"since": datetime(2026, 2, 1, tzinfo=timezone.utc), "until": "2026-01-01T00:00:00Z"},
            "since (2026-02-01T00:00:00+00:00) is after until (2026-01-01T00:00:00+00:00)",
        ),
        ({"since": "last tuesday"}, "since='last tuesday' is not an ISO-8601"),
        ({"until": 12}, "until must be a datetime or an ISO-8601 string"),
        ({"tool_name": 5}, "tool_name must be a string"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else "",
)
@pytest.mark.asyncio
async def test_bad_query_arguments_raise_a_clear_value_error(
    svc: AuditService, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re_escape(message)):
        svc.get_logs(**kwargs)
    with pytest.raises(ValueError, match=re_escape(message)):
        await svc.aget_logs(**kwargs)


def re_escape(message: str) -> str:
    import re

    return re.escape(message)


METACHARACTER_NAMES = [
    "x'; DROP TABLE audit_logs; --",
    'say "hi"',
    "100%",
    "%",
    "a_b",
    "_",
    "back\\slash",
    "semi;colon",
    "* OR 1=1",
    "ünïcødé ✓ 工具 🚀",
    "line\nbreak\ttab",
    "[a-z]?*",
    "--",
]
#: Names a LIKE/GLOB pattern made of the names above would wrongly match.
DECOYS = ["axb", "1000", "anything", "aXb", "b", "backslash", "xyz"]


def test_tool_names_are_just_names(svc: AuditService) -> None:
    tools = {}
    for name in METACHARACTER_NAMES + DECOYS:

        @audit_tool_sync(name=f"meta:{name}", service=svc)
        def tool(seq: int) -> int:
            return seq

        tools[name] = tool
    for i, name in enumerate(METACHARACTER_NAMES + DECOYS):
        tools[name](seq=i)
        tools[name](seq=i + 1000)
    for i, name in enumerate(METACHARACTER_NAMES + DECOYS):
        found = svc.get_logs(tool_name=f"meta:{name}")
        assert sorted(e.parameters["seq"] for e in found) == [i, i + 1000], name
        assert {e.tool_name for e in found} == {f"meta:{name}"}
    assert svc.get_logs(tool_name="meta:%") != svc.get_logs(tool_name="meta:anything")
    with connect(svc.db_path) as conn:  # the table is still there, every row in it
        total = conn.execute("SELECT count(*) FROM audit_logs WHERE tool_name LIKE 'meta:%'")
        assert total.fetchone()[0] == 2 * len(METACHARACTER_NAMES + DECOYS)
