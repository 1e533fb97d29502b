"""``audit_tool(fn, name=..., service=...)``: the plain-call form honours every argument.

Why: servers and wrappers often apply the decorators as functions, not with
``@`` (``audit_tool(handler, name="x")``). Each form must record under the
given name, into the given service, and a wrong kind of function must be
refused at decoration time with a message that names the right decorator.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finops_audit import AuditService, audit_tool, audit_tool_sync


async def _plain_async(x: int) -> int:
    return x


def _plain_sync(x: int) -> int:
    return x


@pytest.mark.asyncio
async def test_audit_tool_called_directly_uses_its_name_and_service(tmp_path: Path) -> None:
    with AuditService(tmp_path / "a.db") as mine, AuditService(tmp_path / "b.db") as other:
        await audit_tool(_plain_async, name="renamed", service=mine)(1)
        mine.flush()
        other.flush()
        [entry] = mine.get_logs()
        assert entry.tool_name == "renamed"
        assert entry.parameters == {"x": 1}
        assert other.get_logs() == []


def test_audit_tool_sync_called_directly_uses_its_name_and_service(tmp_path: Path) -> None:
    with AuditService(tmp_path / "a.db") as mine:
        assert audit_tool_sync(_plain_sync, name="renamed_sync", service=mine)(2) == 2
        mine.flush()
        [entry] = mine.get_logs()
        assert entry.tool_name == "renamed_sync"


def test_the_wrong_decorator_is_refused_naming_the_right_one() -> None:
    with pytest.raises(TypeError, match=r"use @audit_tool_sync for a plain `def` tool"):
        audit_tool(_plain_sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="audit_tool"):
        audit_tool_sync(_plain_async)
