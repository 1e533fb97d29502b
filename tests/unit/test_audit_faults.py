"""A fault inside the audit layer never reaches the tool: it is logged once, then counted.

Why: a tool call's result matters more than its audit record. If handing an
entry to the writer raises anything but the documented ``AuditQueueFullError``
(a bug, a broken writer), the tool's own result or exception still reaches the
caller untouched, and the log gets one error, not one per call (a spam of logs
on the hot path is worse than the fault). The writer here is real; only its
hand-off is made to fail.
"""

from __future__ import annotations

import logging

import pytest

from finops_audit import AuditService, audit_tool, audit_tool_sync, decorators


class _Broken(RuntimeError):
    pass


def _fail(*args: object, **kwargs: object) -> bool:
    raise _Broken("writer hand-off broke")


@pytest.fixture
def broken(svc: AuditService, monkeypatch: pytest.MonkeyPatch) -> AuditService:
    monkeypatch.setattr(decorators, "_internal_errors", 0)  # "once" is per process
    monkeypatch.setattr(svc._writer, "submit", _fail)
    monkeypatch.setattr(svc._writer, "try_submit", _fail)
    return svc


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and "could not record a tool call" in r.getMessage()
    ]


def test_a_sync_tool_keeps_its_result_and_the_fault_is_logged_once(
    broken: AuditService, caplog: pytest.LogCaptureFixture
) -> None:
    @audit_tool_sync(service=broken)
    def tool(x: int) -> int:
        return x * 2

    with caplog.at_level(logging.ERROR, logger="finops_audit"):
        assert tool(1) == 2
        assert len(_errors(caplog)) == 1  # at the first fault, not later
        assert tool(2) == 4
        assert tool(3) == 6
    [record] = _errors(caplog)
    assert "writer hand-off broke" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is _Broken


def test_a_sync_tools_own_exception_still_reaches_the_caller(broken: AuditService) -> None:
    @audit_tool_sync(service=broken)
    def tool() -> None:
        raise KeyError("the tool's own")

    with pytest.raises(KeyError, match="the tool's own"):
        tool()


@pytest.mark.asyncio
async def test_an_async_tool_keeps_its_result_and_the_fault_is_logged_once(
    broken: AuditService, caplog: pytest.LogCaptureFixture
) -> None:
    @audit_tool(service=broken)
    async def tool(x: int) -> int:
        return x + 1

    with caplog.at_level(logging.ERROR, logger="finops_audit"):
        assert await tool(1) == 2
        assert len(_errors(caplog)) == 1
        assert await tool(2) == 3
    assert len(_errors(caplog)) == 1


@pytest.mark.asyncio
async def test_an_async_tools_own_exception_still_reaches_the_caller(
    broken: AuditService,
) -> None:
    @audit_tool(service=broken)
    async def tool() -> None:
        raise KeyError("the tool's own")

    with pytest.raises(KeyError, match="the tool's own"):
        await tool()
