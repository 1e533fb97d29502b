"""Drive the example server over stdio with real clients, the way MCP hosts do.

Each session spawns ``examples/finops_server/server.py --sdk <sdk>`` as a
subprocess with only ``AUDIT_DB_PATH`` added to the client's default (bare)
environment, runs the scripted calls, and leaves the client's context: that
closes the server's stdin, then (after 2 s) SIGTERM if it is still alive.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "examples" / "finops_server" / "server.py"
CLIENT_NAME = "e2e-client"
CLIENT_VERSION = "1.2.3"
TOOLS = {
    "check_tag_compliance",
    "estimate_untagged_cost",
    "find_untagged_resources",
    "get_tag_policy",
}


@dataclass(frozen=True)
class Call:
    """One scripted ``tools/call`` and what the trail must say about it."""

    tool: str
    arguments: dict[str, Any]
    kind: str  # "ok" | "fail" (tool raised) | "invalid" (arguments rejected) | "unknown"
    error: str | None = None  # expected prefix of the recorded error message
    recorded_params: dict[str, Any] | None = None  # subset of the recorded parameters


CALLS = [
    Call(
        "check_tag_compliance",
        {"resource_types": ["s3_bucket", "rds_instance"], "policy_name": "strict"},
        "ok",
    ),
    Call("find_untagged_resources", {"tag_key": "cost-center", "limit": 3}, "ok"),
    Call("get_tag_policy", {"policy_name": "strict"}, "ok"),
    Call(
        "estimate_untagged_cost",
        {"account_id": "111122223333", "filters": {"regions": ["us-east-1"]}, "currency": "EUR"},
        "ok",
        recorded_params={
            "account_id": "111122223333",
            "currency": "EUR",
            "filters": {
                "regions": ["us-east-1"],
                "resource_types": [],
                "min_monthly_cost_usd": 0.0,
            },
        },
    ),
    Call(
        "get_tag_policy",
        {"policy_name": "lenient"},
        "fail",
        error="ValueError: unknown tag policy 'lenient'; known policies: default, strict",
    ),
    Call(
        "estimate_untagged_cost",
        {"account_id": "999999999999"},
        "fail",
        error="ValueError: unknown account '999999999999'",
    ),
    Call("find_untagged_resources", {"tag_key": "owner", "limit": "many"}, "invalid", "Validation"),
    Call(
        "delete_all_resources",
        {"confirm": True},
        "unknown",
        "NotFoundError: Unknown tool: 'delete_all_resources'",
    ),
]


@dataclass
class Session:
    """What the client saw."""

    tool_names: set[str] = field(default_factory=set)
    results: list[tuple[bool, str]] = field(default_factory=list)  # (is_error, first text)


def server_args(sdk: str) -> list[str]:
    return [str(SERVER), "--sdk", sdk]


def _first_text(dumped: dict[str, Any]) -> str:
    for block in dumped.get("content") or ():
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            return str(block["text"])
    return ""


async def run_official(sdk: str, db: Path, calls: list[Call] = CALLS) -> Session:
    """The official SDK's stdio client (mcp 1.x or 2.x, whichever is installed)."""
    from mcp.client.stdio import stdio_client

    from mcp import ClientSession, StdioServerParameters

    try:
        from mcp import types
    except ImportError:  # pragma: no cover - mcp 2.x re-exports mcp_types as mcp.types
        import mcp_types as types

    params = StdioServerParameters(
        command=sys.executable, args=server_args(sdk), env={"AUDIT_DB_PATH": str(db)}
    )
    info = types.Implementation(name=CLIENT_NAME, version=CLIENT_VERSION)
    session = Session()
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, client_info=info) as client,
    ):
        await client.initialize()
        listed = await client.list_tools()
        session.tool_names = {t.name for t in listed.tools}
        for call in calls:
            result = await client.call_tool(call.tool, call.arguments)
            dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
            session.results.append((bool(dumped.get("isError")), _first_text(dumped)))
    return session


async def run_fastmcp(sdk: str, db: Path, calls: list[Call] = CALLS) -> Session:
    """fastmcp's Client over its StdioTransport (keep_alive=False: stdin closes on exit)."""
    import mcp_types
    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport

    transport = StdioTransport(
        command=sys.executable,
        args=server_args(sdk),
        env={"AUDIT_DB_PATH": str(db)},
        keep_alive=False,
    )
    info = mcp_types.Implementation(name=CLIENT_NAME, version=CLIENT_VERSION)
    session = Session()
    async with Client(transport, client_info=info) as client:
        tools = await client.list_tools()
        session.tool_names = {t.name for t in tools}
        for call in calls:
            result = await client.call_tool(call.tool, call.arguments, raise_on_error=False)
            texts = [getattr(c, "text", "") for c in result.content or ()]
            session.results.append((bool(result.is_error), texts[0] if texts else ""))
    return session


def decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def call_in_memory(
    sdk: str, server: Any, calls: list[tuple[str, dict[str, Any]]]
) -> list[tuple[bool, str]]:
    """Connect an in-memory client named ``e2e-client`` to ``server`` and make ``calls``."""
    results: list[tuple[bool, str]] = []
    if sdk == "fastmcp":
        import mcp_types
        from fastmcp import Client as FastMCPClient

        info = mcp_types.Implementation(name=CLIENT_NAME, version=CLIENT_VERSION)
        async with FastMCPClient(server, client_info=info) as fm_client:
            for name, arguments in calls:
                res = await fm_client.call_tool(name, arguments, raise_on_error=False)
                texts = [getattr(c, "text", "") for c in res.content or ()]
                results.append((bool(res.is_error), texts[0] if texts else ""))
        return results
    if sdk == "mcp2":
        import mcp_types
        from mcp.client import Client as Mcp2Client

        info = mcp_types.Implementation(name=CLIENT_NAME, version=CLIENT_VERSION)
        client_cm: Any = Mcp2Client(server, client_info=info)
    else:
        from mcp.shared.memory import create_connected_server_and_client_session

        from mcp import types

        info = types.Implementation(name=CLIENT_NAME, version=CLIENT_VERSION)
        client_cm = create_connected_server_and_client_session(server, client_info=info)
    async with client_cm as client:
        for name, arguments in calls:
            res = await client.call_tool(name, arguments)
            dumped = res.model_dump(mode="json", by_alias=True, exclude_none=True)
            results.append((bool(dumped.get("isError")), _first_text(dumped)))
    return results
