"""``@audit_tool`` / ``@audit_tool_sync``: identity, pass-through, outcomes, options."""

from __future__ import annotations

import asyncio
import inspect
import re
import traceback
import typing
from pathlib import Path

import pytest

import finops_audit
from finops_audit import AuditService, AuditStatus, audit_tool, audit_tool_sync
from finops_audit._mcp_context import HIDDEN
from tests.helpers import disk_rows

# --------------------------------------------------------------------------- default service


@pytest.mark.asyncio
async def test_bare_audit_tool_uses_default_service_from_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "from_env" / "trail.db"
    monkeypatch.setenv("AUDIT_DB_PATH", str(target))

    @audit_tool
    async def check_tag_compliance(
        resource_types: list[str], filters: dict | None = None, severity: str = "all"
    ) -> dict:
        return {"compliant": True}

    assert await check_tag_compliance(resource_types=["ec2"], severity="high") == {
        "compliant": True
    }
    default = finops_audit.get_default_service()
    assert default.db_path == target
    await default.aflush()
    [row] = disk_rows(target)
    assert row["tool_name"] == "check_tag_compliance"
    assert row["status"] == "SUCCESS"
    assert row["parameters"] == {"resource_types": ["ec2"], "severity": "high"}


def test_bare_audit_tool_sync_uses_default_service_from_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "sync_env.db"
    monkeypatch.setenv("AUDIT_DB_PATH", str(target))

    @audit_tool_sync
    def list_policies(region: str) -> list[str]:
        return [f"policy-{region}"]

    assert list_policies("eu-west-1") == ["policy-eu-west-1"]
    finops_audit.get_default_service().flush()
    [row] = disk_rows(target)
    assert row["tool_name"] == "list_policies"
    assert row["parameters"] == {"region": "eu-west-1"}


def test_default_service_without_env_writes_audit_logs_db_in_cwd(tmp_path: Path) -> None:
    @audit_tool_sync()
    def ping() -> str:
        return "pong"

    assert ping() == "pong"
    finops_audit.get_default_service().flush()
    assert [r["tool_name"] for r in disk_rows(tmp_path / "audit_logs.db")] == ["ping"]


def test_set_default_service_redirects_bare_decorators(tmp_path: Path) -> None:
    @audit_tool_sync
    def ping(n: int) -> int:
        return n

    first = AuditService(db_path=tmp_path / "first.db")
    second = AuditService(db_path=tmp_path / "second.db")
    with first, second:
        assert finops_audit.set_default_service(first) is None
        ping(1)
        assert finops_audit.set_default_service(second) is first
        ping(2)
        assert [e.parameters for e in first.get_logs()] == [{"n": 1}]
        assert [e.parameters for e in second.get_logs()] == [{"n": 2}]
        assert finops_audit.get_default_service() is second


# --------------------------------------------------------------------------- options


@pytest.mark.asyncio
async def test_audit_tool_name_and_service_options(svc: AuditService) -> None:
    @audit_tool(name="compliance.check", service=svc)
    async def other(account: str) -> str:
        return account

    assert await other("123") == "123"
    [entry] = await svc.aget_logs()
    assert entry.tool_name == "compliance.check"
    assert entry.parameters == {"account": "123"}
    assert not (Path.cwd() / "audit_logs.db").exists(), "the default service was used"


def test_audit_tool_sync_name_and_service_options(svc: AuditService) -> None:
    @audit_tool_sync(name="policies.list", service=svc)
    def list_policies(region: str) -> list[str]:
        return [region]

    assert list_policies(region="us-east-1") == ["us-east-1"]
    [entry] = svc.get_logs(tool_name="policies.list")
    assert entry.parameters == {"region": "us-east-1"}
    assert svc.get_logs(tool_name="list_policies") == []


# --------------------------------------------------------------------------- identity


async def _async_tool(resource_types: list[str], severity: str = "all") -> dict[str, int]:
    """Check tag compliance."""
    return {"n": len(resource_types)}


def _sync_tool(region: str, *, limit: int = 10) -> list[str]:
    """List policies."""
    return [region] * limit


def _without_hidden(hints: dict) -> dict:
    return {k: v for k, v in hints.items() if k != HIDDEN}


@pytest.mark.parametrize(
    ("decorator", "fn"),
    [
        (audit_tool, _async_tool),
        (audit_tool_sync, _sync_tool),
        (lambda f: audit_tool(name="x")(f), _async_tool),
        (lambda f: audit_tool_sync(name="x")(f), _sync_tool),
    ],
    ids=["audit_tool", "audit_tool_sync", "audit_tool(name)", "audit_tool_sync(name)"],
)
def test_wrapper_keeps_the_tools_identity(decorator, fn) -> None:
    wrapper = decorator(fn)
    assert wrapper is not fn
    assert wrapper.__wrapped__ is fn
    assert wrapper.__name__ == fn.__name__
    assert wrapper.__qualname__ == fn.__qualname__
    assert wrapper.__module__ == fn.__module__
    assert wrapper.__doc__ == fn.__doc__
    # With mcp 2.x installed the wrapper adds one hint: the hidden Context it
    # asks that SDK to inject (never part of the signature or schema).
    assert _without_hidden(wrapper.__annotations__) == fn.__annotations__
    assert set(wrapper.__annotations__) - set(fn.__annotations__) <= {HIDDEN}
    assert inspect.signature(wrapper) == inspect.signature(fn)
    assert _without_hidden(typing.get_type_hints(wrapper)) == typing.get_type_hints(fn)
    assert inspect.iscoroutinefunction(wrapper) == inspect.iscoroutinefunction(fn)


def test_audit_tool_wrapper_is_a_coroutine_function() -> None:
    assert inspect.iscoroutinefunction(audit_tool(_async_tool))
    assert inspect.iscoroutinefunction(audit_tool(name="n")(_async_tool))
    assert not inspect.iscoroutinefunction(audit_tool_sync(_sync_tool))


@pytest.mark.parametrize("with_options", [False, True])
def test_audit_tool_on_plain_def_names_audit_tool_sync(with_options: bool) -> None:
    deco = audit_tool(name="x") if with_options else audit_tool
    with pytest.raises(TypeError, match="audit_tool_sync"):
        deco(_sync_tool)


@pytest.mark.parametrize("with_options", [False, True])
def test_audit_tool_sync_on_async_def_names_audit_tool(with_options: bool) -> None:
    deco = audit_tool_sync(name="x") if with_options else audit_tool_sync
    with pytest.raises(TypeError) as info:
        deco(_async_tool)
    # It must point at @audit_tool itself, not only repeat its own name.
    assert re.search(r"@audit_tool(?!_sync)\b", str(info.value)), str(info.value)


# --------------------------------------------------------------------------- pass-through


@pytest.mark.asyncio
async def test_async_result_and_exception_pass_through(svc: AuditService) -> None:
    sentinel = object()
    error = LookupError("no such account")

    @audit_tool(service=svc)
    async def ok() -> object:
        return sentinel

    @audit_tool(service=svc)
    async def broken_tool() -> None:
        await asyncio.sleep(0)
        raise error

    assert await ok() is sentinel
    with pytest.raises(LookupError) as info:
        await broken_tool()
    assert info.value is error
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "broken_tool"
    assert frames[-1].line == "raise error"

    failed, succeeded = await svc.aget_logs()
    assert succeeded.status is AuditStatus.SUCCESS
    assert failed.status is AuditStatus.FAILURE
    assert failed.error_message == "LookupError: no such account"


def test_sync_result_and_exception_pass_through(svc: AuditService) -> None:
    sentinel = object()
    error = ValueError("bad region")

    @audit_tool_sync(service=svc)
    def ok() -> object:
        return sentinel

    @audit_tool_sync(service=svc)
    def broken_tool() -> None:
        raise error

    assert ok() is sentinel
    with pytest.raises(ValueError) as info:
        broken_tool()
    assert info.value is error
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "broken_tool"
    assert frames[-1].line == "raise error"

    failed, succeeded = svc.get_logs()
    assert (succeeded.tool_name, succeeded.status) == ("ok", AuditStatus.SUCCESS)
    assert (failed.tool_name, failed.status) == ("broken_tool", AuditStatus.FAILURE)
    assert failed.error_message == "ValueError: bad region"


def test_exception_without_message_is_recorded_by_type_name(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def tool() -> None:
        raise RuntimeError

    with pytest.raises(RuntimeError):
        tool()
    [entry] = svc.get_logs()
    assert entry.error_message == "RuntimeError"


@pytest.mark.asyncio
async def test_cancelled_async_tool_is_recorded_as_failure(svc: AuditService) -> None:
    started = asyncio.Event()

    @audit_tool(service=svc)
    async def slow_scan(account: str) -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(slow_scan("123"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()

    [entry] = await svc.aget_logs()
    assert entry.tool_name == "slow_scan"
    assert entry.status is AuditStatus.FAILURE
    assert entry.error_message is not None
    assert entry.error_message.startswith("CancelledError")
    assert entry.parameters == {"account": "123"}


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_in_sync_tool_are_recorded_and_reraised(
    svc: AuditService, exc_type: type[BaseException]
) -> None:
    error = exc_type()

    @audit_tool_sync(service=svc)
    def interrupted() -> None:
        raise error

    with pytest.raises(exc_type) as info:
        interrupted()
    assert info.value is error
    [entry] = svc.get_logs()
    assert entry.status is AuditStatus.FAILURE
    assert entry.error_message == exc_type.__name__


@pytest.mark.asyncio
async def test_base_exception_in_async_tool_is_recorded_and_reraised(svc: AuditService) -> None:
    error = KeyboardInterrupt()

    @audit_tool(service=svc)
    async def interrupted() -> None:
        raise error

    with pytest.raises(KeyboardInterrupt) as info:
        await interrupted()
    assert info.value is error
    [entry] = await svc.aget_logs()
    assert entry.status is AuditStatus.FAILURE
    assert entry.error_message == "KeyboardInterrupt"


# --------------------------------------------------------------------------- disabled


@pytest.mark.parametrize("value", ["false", "0", "False", "no"])
def test_logging_disabled_by_env_returns_the_function_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("AUDIT_LOGGING_ENABLED", value)
    assert audit_tool(_async_tool) is _async_tool
    assert audit_tool(name="x")(_async_tool) is _async_tool
    assert audit_tool_sync(_sync_tool) is _sync_tool
    assert audit_tool_sync(name="x")(_sync_tool) is _sync_tool
    assert _sync_tool("r", limit=1) == ["r"]
    assert not (tmp_path / "audit_logs.db").exists()


def test_logging_disabled_on_explicit_service_returns_the_function_itself(
    tmp_path: Path,
) -> None:
    with AuditService(db_path=tmp_path / "off.db", logging_enabled=False) as off:
        assert audit_tool(service=off)(_async_tool) is _async_tool
        assert audit_tool_sync(service=off)(_sync_tool) is _sync_tool
    assert not (tmp_path / "off.db").exists()


def test_explicit_enabled_service_wins_over_disabled_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUDIT_LOGGING_ENABLED", "false")
    with AuditService(db_path=tmp_path / "on.db", logging_enabled=True) as on:
        tool = audit_tool_sync(service=on)(_sync_tool)
        assert tool is not _sync_tool
        assert tool("eu", limit=2) == ["eu", "eu"]
        assert len(on.get_logs()) == 1
