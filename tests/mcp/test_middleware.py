"""The SDK middlewares record what decorators cannot see, and nothing twice.

In memory, with a real client: decorated tools (recorded by the decorator),
undecorated tools (recorded by the middleware), arguments rejected by
validation and unknown tools (only the middleware sees them). Every call must
be in the trail exactly once, also with the middleware registered twice (the
way nested or mounted servers stack it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from finops_audit import AuditService, AuditStatus, audit_tool, audit_tool_sync
from finops_audit.context import audit_context

from ._harness import CLIENT_NAME, CLIENT_VERSION, call_in_memory
from .conftest import installed_server_sdks

SDKS = [sdk for sdk in installed_server_sdks() if sdk in {"fastmcp", "mcp2"}]
if not SDKS:
    pytest.skip("mcp 1.x has no middleware", allow_module_level=True)

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("add", {"a": 1}),
    ("boom", {"msg": "x"}),
    ("plain_ok", {"n": 3}),
    ("plain_fail", {"n": 4}),
    ("add", {"a": "not a number"}),
    ("no_such_tool", {"q": 1}),
]


def make_server(sdk: str, svc: AuditService, copies: int) -> Any:
    if sdk == "fastmcp":
        from fastmcp import FastMCP

        from finops_audit.integrations.fastmcp import AuditMiddleware as FastMCPMiddleware

        server: Any = FastMCP("mw", middleware=[FastMCPMiddleware(svc) for _ in range(copies)])
    else:
        from mcp.server.mcpserver import MCPServer

        from finops_audit.integrations.mcp import AuditMiddleware

        server = MCPServer("mw", middleware=[AuditMiddleware(svc) for _ in range(copies)])

    @server.tool()
    @audit_tool(service=svc)
    async def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    @audit_tool_sync(service=svc)
    def boom(msg: str) -> str:
        """Fail, from a worker thread."""
        raise ValueError(f"boom {msg}")

    @server.tool()
    async def plain_ok(n: int) -> int:
        """Not decorated: only the middleware records it."""
        return n * 2

    @server.tool()
    def plain_fail(n: int) -> int:
        """Not decorated, and failing."""
        raise ValueError(f"plain {n}")

    return server


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[AuditService]:
    service = AuditService(db_path=tmp_path / "audit.db")
    yield service
    service.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("copies", [1, 2], ids=["once", "twice"])
@pytest.mark.parametrize("sdk", SDKS)
async def test_every_call_once(sdk: str, copies: int, svc: AuditService) -> None:
    results = await call_in_memory(sdk, make_server(sdk, svc, copies), CALLS)
    assert [is_error for is_error, _ in results] == [False, True, False, True, True, True]

    rows = list(reversed(svc.get_logs()))
    got = [(r.tool_name, r.status, r.parameters) for r in rows]
    assert got == [
        ("add", AuditStatus.SUCCESS, {"a": 1, "b": 2}),  # decorator: validated, defaults
        ("boom", AuditStatus.FAILURE, {"msg": "x"}),
        ("plain_ok", AuditStatus.SUCCESS, {"n": 3}),  # middleware: as sent
        ("plain_fail", AuditStatus.FAILURE, {"n": 4}),
        ("add", AuditStatus.FAILURE, {"a": "not a number"}),
        ("no_such_tool", AuditStatus.FAILURE, {"q": 1}),
    ]
    errors = [r.error_message or "" for r in rows]
    assert errors[0] == ""
    assert errors[1] == "ValueError: boom x"
    assert errors[2] == ""
    if sdk == "fastmcp":
        assert errors[3] == "ValueError: plain 4"  # the ToolError's cause
    else:
        assert errors[3] == "ToolError: Error executing tool plain_fail"  # mcp 2 hides it
    assert errors[4].startswith("ValidationError: ")
    assert "valid integer" in errors[4]
    assert errors[5] == "NotFoundError: Unknown tool: 'no_such_tool'"
    for row in rows:
        assert (row.client_name, row.client_version) == (CLIENT_NAME, CLIENT_VERSION), row
        assert row.request_id is not None, row
        assert row.execution_time_ms is not None, row


@pytest.mark.asyncio
@pytest.mark.parametrize("sdk", SDKS)
async def test_audit_context_is_merged(sdk: str, svc: AuditService) -> None:
    """An ``audit_context`` around the server reaches middleware rows; the SDK fills the rest."""
    server = make_server(sdk, svc, 1)
    with audit_context(user="alice@example.com", team="finops"):
        # In memory the server's tasks start inside the client's context manager,
        # so they inherit this context, as a host-set context would reach them.
        await call_in_memory(sdk, server, [("plain_ok", {"n": 1}), ("no_such_tool", {})])
    rows = svc.get_logs()
    assert len(rows) == 2
    for row in rows:
        assert row.user == "alice@example.com", row
        assert row.labels == {"team": "finops"}, row
        assert row.client_name == CLIENT_NAME, row


@pytest.mark.asyncio
@pytest.mark.parametrize("sdk", SDKS)
async def test_disabled_service_records_nothing(sdk: str, tmp_path: Path) -> None:
    with AuditService(db_path=tmp_path / "off.db", logging_enabled=False) as off:
        results = await call_in_memory(
            sdk, make_server(sdk, off, 1), [("plain_ok", {"n": 1}), ("nope", {})]
        )
        assert [e for e, _ in results] == [False, True]
        assert off.get_logs() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("sdk", SDKS)
async def test_undecorated_tool_calling_a_decorated_helper(sdk: str, svc: AuditService) -> None:
    """The helper's call is the helper's: the tool around it is still recorded, once."""
    server = make_server(sdk, svc, 1)

    @audit_tool_sync(service=svc)
    def lookup_policy(name: str) -> str:
        return name.upper()

    @server.tool()
    def uses_helper(name: str) -> str:
        """Not decorated itself; calls a decorated helper."""
        return lookup_policy(name)

    results = await call_in_memory(sdk, server, [("uses_helper", {"name": "strict"})])
    assert [is_error for is_error, _ in results] == [False]
    rows = list(reversed(svc.get_logs()))
    assert [(r.tool_name, r.parameters) for r in rows] == [  # oldest start first
        ("uses_helper", {"name": "strict"}),  # the middleware, for the tool itself
        ("lookup_policy", {"name": "strict"}),  # the decorator, inside the tool
    ]
