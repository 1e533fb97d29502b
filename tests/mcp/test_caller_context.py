"""Inside an MCP tool the caller is filled in automatically, with decorators alone.

No middleware is registered: the decorators find the client name and version
and the request id through each SDK's own hook, in async tools and in sync
tools (which mcp 2.x and fastmcp run in AnyIO worker threads), and merge an
enclosing ``audit_context`` over it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from finops_audit import AuditService, audit_tool, audit_tool_sync

from ._harness import CLIENT_NAME, CLIENT_VERSION, call_in_memory
from .conftest import installed_server_sdks
from .test_schema_identity import server_and_context

SDKS = installed_server_sdks()


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[AuditService]:
    service = AuditService(db_path=tmp_path / "audit.db")
    yield service
    service.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("sdk", SDKS)
async def test_caller_is_recorded_in_async_and_sync_tools(sdk: str, svc: AuditService) -> None:
    server_cls, _ = server_and_context(sdk)
    server = server_cls("caller")

    @server.tool()
    @audit_tool(service=svc)
    async def who_async(x: int) -> str:
        """Name the thread an async tool runs on."""
        return threading.current_thread().name

    @server.tool()
    @audit_tool_sync(service=svc)
    def who_sync(x: int) -> str:
        """Name the thread a sync tool runs on."""
        return threading.current_thread().name

    results = await call_in_memory(sdk, server, [("who_async", {"x": 1}), ("who_sync", {"x": 2})])
    assert [is_error for is_error, _ in results] == [False, False], results
    sync_thread = results[1][1]
    if sdk == "mcp1":
        assert sync_thread == threading.current_thread().name  # the event loop's thread
    else:
        assert sync_thread != threading.current_thread().name  # an AnyIO worker thread

    rows = {r.tool_name: r for r in svc.get_logs()}
    assert set(rows) == {"who_async", "who_sync"}
    for name, row in rows.items():
        assert (row.client_name, row.client_version) == (CLIENT_NAME, CLIENT_VERSION), name
        assert row.request_id is not None, name
        assert row.session_id is None, name  # in memory: no HTTP session
    assert rows["who_async"].request_id != rows["who_sync"].request_id
    assert rows["who_sync"].parameters == {"x": 2}
