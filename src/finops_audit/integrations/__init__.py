"""Middleware that audits every MCP ``tools/call``, for the SDKs that offer middleware.

The decorators record the calls that reach a tool; a server's middleware also
sees the calls that never do: arguments rejected by validation and names of
tools that do not exist. Each submodule imports its SDK, so import the one you
use (importing :mod:`finops_audit` itself never imports an MCP SDK)::

    from finops_audit.integrations.fastmcp import AuditMiddleware   # fastmcp >= 4.2.3
    server = FastMCP("finops", middleware=[AuditMiddleware()])

    from finops_audit.integrations.mcp import AuditMiddleware       # mcp >= 2.3
    server = MCPServer("finops", middleware=[AuditMiddleware()])

A call to a decorated tool is recorded once, by the decorator; the middleware
records only the calls no decorator saw (see :mod:`finops_audit.context`'s
``call_slot``). mcp 1.x has no middleware: decorators alone audit it.
"""

from __future__ import annotations

__all__: list[str] = []
