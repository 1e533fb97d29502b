"""``@server.tool()`` over our decorators exposes exactly what the bare function does.

For each installed SDK, one server gets the bare functions and another the
audited ones; their whole ``tools/list`` entries (name, description, input and
output schema) must be equal, for defaults, ``Optional``, lists, nested
pydantic models, ``Annotated`` constraints, a ``ctx: Context`` parameter, and a
module with ``from __future__ import annotations``. ``Context`` must still be
injected into the audited tool, and never recorded as a parameter.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from finops_audit import AuditService, audit_tool, audit_tool_sync

from .conftest import installed_server_sdks

SIGNATURES = Path(__file__).with_name("signatures")
MODULES = ["sigs_plain", "sigs_future"]
SDKS = installed_server_sdks()


def server_and_context(sdk: str) -> tuple[type, type]:
    if sdk == "fastmcp":
        from fastmcp import Context, FastMCP

        return FastMCP, Context
    if sdk == "mcp2":
        from mcp.server.mcpserver import Context, MCPServer

        return MCPServer, Context
    from mcp.server.fastmcp import Context
    from mcp.server.fastmcp import FastMCP as Mcp1FastMCP

    return Mcp1FastMCP, Context


def load_signatures(sdk: str, name: str, context: type) -> types.ModuleType:
    """A fresh copy of ``signatures/<name>.py`` whose ``Context`` is ``sdk``'s."""
    shim = types.ModuleType("_finops_ctxtype")
    shim.Context = context  # type: ignore[attr-defined]
    sys.modules["_finops_ctxtype"] = shim
    module_name = f"_finops_sigs_{sdk}_{name}"
    spec = importlib.util.spec_from_file_location(module_name, SIGNATURES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic and get_type_hints resolve names here
    spec.loader.exec_module(module)
    return module


async def tools_list(sdk: str, server: Any) -> dict[str, dict[str, Any]]:
    """The in-process ``tools/list`` entries, as the wire carries them."""
    out = {}
    for tool in await server.list_tools():
        wire = tool.to_mcp_tool() if sdk == "fastmcp" else tool
        entry = wire.model_dump(mode="json", by_alias=True, exclude_none=True)
        out[entry["name"]] = entry
    return out


async def call_text(sdk: str, server: Any, name: str, arguments: dict[str, Any]) -> list[str]:
    result = await server.call_tool(name, arguments)
    if isinstance(result, tuple):  # mcp 1.x: (content, structured)
        result = result[0]
    content = getattr(result, "content", result)
    return [getattr(block, "text", "") for block in content]


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[AuditService]:
    service = AuditService(db_path=tmp_path / "audit.db")
    yield service
    service.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("module_name", MODULES)
@pytest.mark.parametrize("sdk", SDKS)
async def test_tools_list_entries_are_identical(
    sdk: str, module_name: str, svc: AuditService
) -> None:
    server_cls, context = server_and_context(sdk)
    module = load_signatures(sdk, module_name, context)
    functions = {
        n: f
        for n, f in vars(module).items()
        if inspect.isfunction(f) and f.__module__ == module.__name__
    }
    assert len(functions) >= 9
    bare, audited = server_cls("bare"), server_cls("audited")
    for fn in functions.values():
        bare.tool()(fn)
        decorate = audit_tool if inspect.iscoroutinefunction(fn) else audit_tool_sync
        audited.tool()(decorate(service=svc)(fn))

    expected, actual = await tools_list(sdk, bare), await tools_list(sdk, audited)
    assert set(actual) == set(functions)
    for name in functions:
        assert actual[name] == expected[name], name
    for name in ("with_ctx", "sync_with_ctx"):
        assert "ctx" not in actual[name]["inputSchema"].get("properties", {})
    assert actual["nested"]["description"] == "Nested model doc."

    # Context is still injected, into async and sync tools alike ...
    for name in ("with_ctx", "sync_with_ctx"):
        bare_text = await call_text(sdk, bare, name, {"resource": "r-1"})
        audited_text = await call_text(sdk, audited, name, {"resource": "r-1"})
        assert audited_text == bare_text == [context.__name__], name
    # ... and never recorded as a parameter.
    rows = {r.tool_name: r for r in svc.get_logs()}
    assert rows["with_ctx"].parameters == {"resource": "r-1", "limit": 10}
    assert rows["sync_with_ctx"].parameters == {"resource": "r-1"}
