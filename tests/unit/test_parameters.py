"""What the trail says a tool was called with: names, snapshots, odd values, Context."""

from __future__ import annotations

import dataclasses
import decimal
import enum
import math
import uuid
from datetime import date, datetime, timezone
from pathlib import PurePosixPath
from typing import Any

import pydantic
import pytest

from finops_audit import AuditService, audit_tool, audit_tool_sync
from tests.helpers import Context, disk_rows
from tests.unit import _annotated_tools

# --------------------------------------------------------------------------- names


def test_positional_arguments_are_recorded_by_parameter_name(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def tag(resource_id: str, key: str, value: str = "none", *, dry_run: bool = False) -> None:
        return None

    tag("i-1", "owner")
    tag("i-2", "team", "finops", dry_run=True)
    tag(resource_id="i-3", key="env")
    latest, middle, first = svc.get_logs()
    # The arguments actually passed, each under its parameter name; defaults not
    # passed are not invented (MCP SDKs pass them explicitly anyway).
    assert first.parameters == {"resource_id": "i-1", "key": "owner"}
    assert middle.parameters == {
        "resource_id": "i-2",
        "key": "team",
        "value": "finops",
        "dry_run": True,
    }
    assert latest.parameters == {"resource_id": "i-3", "key": "env"}


def test_positional_only_parameters_are_named(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def cost(account: str, /, month: int) -> int:
        return month

    assert cost("acme", 11) == 11
    [entry] = svc.get_logs()
    assert entry.parameters == {"account": "acme", "month": 11}


def test_var_positional_and_var_keyword(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def tag_all(key: str, *resource_ids: str, **labels: str) -> int:
        return len(resource_ids) + len(labels)

    assert tag_all("owner", "i-1", "i-2", team="finops", env="prod") == 4
    assert tag_all("owner") == 0
    bare, full = svc.get_logs()
    assert full.parameters == {
        "key": "owner",
        "resource_ids": ["i-1", "i-2"],
        "team": "finops",
        "env": "prod",
    }
    assert bare.parameters == {"key": "owner"}


@pytest.mark.asyncio
async def test_async_tool_with_args_and_kwargs_only(svc: AuditService) -> None:
    @audit_tool(service=svc)
    async def anything(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    assert await anything(1, 2, region="eu") == 3
    [entry] = await svc.aget_logs()
    assert entry.parameters == {"args": [1, 2], "region": "eu"}


def test_no_arguments_record_an_empty_dict(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def ping() -> str:
        return "pong"

    ping()
    [entry] = svc.get_logs()
    assert entry.parameters == {}


# --------------------------------------------------------------------------- snapshot


def test_sync_tool_mutating_its_arguments_does_not_rewrite_history(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def normalise(resource_types: list[str], filters: dict[str, Any]) -> None:
        resource_types.append("added-by-tool")
        resource_types[0] = "changed"
        filters["injected"] = True
        filters.pop("region")

    types_arg = ["ec2", "s3"]
    filters_arg = {"region": "eu-west-1"}
    normalise(types_arg, filters=filters_arg)
    assert types_arg == ["changed", "s3", "added-by-tool"]
    [entry] = svc.get_logs()
    assert entry.parameters == {
        "resource_types": ["ec2", "s3"],
        "filters": {"region": "eu-west-1"},
    }


@pytest.mark.asyncio
async def test_async_tool_mutating_its_arguments_after_awaiting(svc: AuditService) -> None:
    import asyncio

    @audit_tool(service=svc)
    async def normalise(resource_types: list[str], filters: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        resource_types.clear()
        filters["nested"]["k"] = "mutated"

    await normalise(["rds"], {"nested": {"k": "original"}})
    [entry] = await svc.aget_logs()
    assert entry.parameters == {"resource_types": ["rds"], "filters": {"nested": {"k": "original"}}}


# --------------------------------------------------------------------------- odd values


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Budget:
    account: str
    limit: int


class Filter(pydantic.BaseModel):
    region: str
    since: datetime


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class WeirdAttrs:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")

    def __repr__(self) -> str:
        return "<WeirdAttrs>"


def _cyclic_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"k": 1}
    value["self"] = value
    return value


ODD_VALUES = [
    pytest.param({3, 1, 2}, [1, 2, 3], id="set"),
    pytest.param(frozenset({"b", "a"}), ["a", "b"], id="frozenset"),
    pytest.param(b"\x00\xff", {"$type": "bytes", "base64": "AP8="}, id="bytes"),
    pytest.param(
        datetime(2026, 11, 28, 4, 0, tzinfo=timezone.utc),
        "2026-11-28T04:00:00+00:00",
        id="datetime",
    ),
    pytest.param(date(2026, 11, 28), "2026-11-28", id="date"),
    pytest.param(decimal.Decimal("1.10"), "1.10", id="Decimal"),
    pytest.param(uuid.UUID(int=5), "00000000-0000-0000-0000-000000000005", id="UUID"),
    pytest.param(Budget("acme", 100), {"account": "acme", "limit": 100}, id="dataclass"),
    pytest.param(
        Filter(region="eu", since=datetime(2026, 1, 1, tzinfo=timezone.utc)),
        {"region": "eu", "since": "2026-01-01T00:00:00Z"},
        id="pydantic",
    ),
    pytest.param(Color.RED, "red", id="Enum"),
    pytest.param(Level.HIGH, 3, id="IntEnum"),
    pytest.param((1, "a"), [1, "a"], id="tuple"),
    pytest.param({1: "a", 2: "b"}, {"1": "a", "2": "b"}, id="int-keys"),
    pytest.param({(1, 2): "v"}, {"(1, 2)": "v"}, id="tuple-keys"),
    pytest.param(1 + 2j, {"$type": "complex", "value": "(1+2j)"}, id="complex"),
    pytest.param(
        PurePosixPath("/data/x"),
        {"$type": "PurePosixPath", "repr": "PurePosixPath('/data/x')"},
        id="path",
    ),
    pytest.param(
        BadRepr(),
        {"$type": "BadRepr", "repr": "<unrepresentable BadRepr object>"},
        id="repr-raises",
    ),
    pytest.param(
        WeirdAttrs(), {"$type": "WeirdAttrs", "repr": "<WeirdAttrs>"}, id="getattr-raises"
    ),
    pytest.param(_cyclic_list(), [1, {"$cycle": "list"}], id="cyclic-list"),
    pytest.param(_cyclic_dict(), {"k": 1, "self": {"$cycle": "dict"}}, id="cyclic-dict"),
    pytest.param("a\ud800b", "a\\ud800b", id="lone-surrogate"),
]


@pytest.mark.parametrize(("value", "expected"), ODD_VALUES)
def test_values_json_cannot_hold_are_stored_readably(
    svc: AuditService, db_path, value: Any, expected: Any
) -> None:
    @audit_tool_sync(service=svc)
    def tool(value: Any, region: str) -> str:
        return "ok"

    assert tool(value, region="eu") == "ok"
    [entry] = svc.get_logs()
    assert entry.parameters == {"value": expected, "region": "eu"}
    svc.flush()
    [row] = disk_rows(db_path)  # the stored text is valid JSON on its own
    assert row["parameters"] == {"value": expected, "region": "eu"}


@pytest.mark.asyncio
async def test_async_tool_with_an_unencodable_argument_still_runs(svc: AuditService) -> None:
    @audit_tool(service=svc)
    async def tool(value: Any) -> str:
        return "ran"

    assert await tool(BadRepr()) == "ran"
    assert await tool(_cyclic_list()) == "ran"
    cyclic, bad = await svc.aget_logs()
    assert bad.parameters == {
        "value": {"$type": "BadRepr", "repr": "<unrepresentable BadRepr object>"}
    }
    assert cyclic.parameters == {"value": [1, {"$cycle": "list"}]}


def test_big_integers_round_trip_exactly(svc: AuditService, db_path) -> None:
    @audit_tool_sync(service=svc)
    def tool(account_number: int) -> None:
        return None

    tool(2**70 + 1)
    svc.flush()
    assert disk_rows(db_path)[0]["parameters"] == {"account_number": 2**70 + 1}
    [entry] = svc.get_logs()
    assert entry.parameters == {"account_number": 2**70 + 1}


def test_top_level_non_finite_floats_are_recorded_faithfully(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def typed(threshold: float) -> None:
        return None

    @audit_tool_sync(service=svc)
    def untyped(threshold):  # type: ignore[no-untyped-def]
        return None

    typed(math.nan)
    typed(math.inf)
    untyped(-math.inf)
    recorded = [e.parameters["threshold"] for e in reversed(svc.get_logs())]
    assert recorded == ["nan", "inf", "-inf"]


@pytest.mark.parametrize(
    "value", [[0.5, math.nan], {"max": math.inf}], ids=["nan-in-list", "inf-in-dict"]
)
def test_nested_non_finite_floats_are_not_recorded_as_null(svc: AuditService, value: Any) -> None:
    @audit_tool_sync(service=svc)
    def tool(thresholds: Any) -> None:
        return None

    tool(value)
    [entry] = svc.get_logs()
    recorded = entry.parameters["thresholds"]
    flat = recorded if isinstance(recorded, list) else list(recorded.values())
    assert None not in flat, recorded


# --------------------------------------------------------------------------- MCP Context


def test_context_parameter_is_not_recorded(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def tool(account: str, ctx: Context) -> str:
        return account

    assert tool("acme", Context()) == "acme"
    assert tool("beta", ctx=Context()) == "beta"
    kw, positional = svc.get_logs()
    assert positional.parameters == {"account": "acme"}
    assert kw.parameters == {"account": "beta"}


def test_context_under_any_parameter_name_is_not_recorded(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def tool(c: Context, account: str) -> str:
        return account

    tool(Context(), "acme")
    [entry] = svc.get_logs()
    assert entry.parameters == {"account": "acme"}


@pytest.mark.asyncio
async def test_string_annotated_context_is_not_recorded(svc: AuditService) -> None:
    tool = audit_tool(service=svc)(_annotated_tools.describe_budget)
    assert await tool("acme", Context()) == "acme"
    sync_tool = audit_tool_sync(service=svc)(_annotated_tools.describe_budget_sync)
    assert sync_tool(Context(), "beta", limit=3) == "beta"
    optional = audit_tool_sync(service=svc)(_annotated_tools.with_optional_context)
    assert optional(account="gamma", ctx=Context()) == "gamma"

    third, second, first = await svc.aget_logs()
    assert first.parameters == {"account": "acme"}
    assert second.parameters == {"account": "beta", "limit": 3}
    assert third.parameters == {"account": "gamma"}


def test_context_set_through_dunder_annotations_is_not_recorded(svc: AuditService) -> None:
    def tool(account, ctx):  # type: ignore[no-untyped-def]
        return account

    tool.__annotations__ = {"account": "str", "ctx": "Context"}
    audited = audit_tool_sync(service=svc)(tool)
    audited("acme", Context())
    [entry] = svc.get_logs()
    assert entry.parameters == {"account": "acme"}


def test_a_users_own_class_named_like_a_context_is_recorded(svc: AuditService) -> None:
    class RequestContext:
        def __repr__(self) -> str:
            return "<RequestContext>"

    @audit_tool_sync(service=svc)
    def tool(account: str, request: RequestContext) -> str:
        return account

    tool("acme", RequestContext())
    [entry] = svc.get_logs()
    assert entry.parameters == {
        "account": "acme",
        "request": {"$type": RequestContext.__qualname__, "repr": "<RequestContext>"},
    }


def test_oversized_parameters_are_truncated_with_an_explicit_marker(tmp_path) -> None:
    with AuditService(db_path=tmp_path / "big.db", max_param_bytes=1024) as small:

        @audit_tool_sync(service=small)
        def upload(blob: str, name: str) -> int:
            return len(blob)

        assert upload("x" * 10_000, name="report") == 10_000
        assert upload("y" * 10, name="tiny") == 10
        tiny, big = small.get_logs()
    assert tiny.parameters == {"blob": "y" * 10, "name": "tiny"}
    assert big.parameters["name"] == "report"  # the neighbour survives the cut
    blob = big.parameters["blob"]
    assert blob["$truncated"] is True
    assert blob["original_bytes"] == 10_000
    assert blob["preview"].startswith("xxx")
    assert 500 < len(blob["preview"]) < 1024
