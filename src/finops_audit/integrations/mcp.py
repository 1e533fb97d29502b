"""Official MCP SDK 2.x server middleware that audits every ``tools/call`` (tested with mcp 2.3.0).

Register it on the server::

    from mcp.server.mcpserver import MCPServer
    from finops_audit.integrations.mcp import AuditMiddleware

    server = MCPServer("finops", middleware=[AuditMiddleware()])

mcp 2.x runs server middleware around every inbound message, before argument
validation and tool lookup, so this middleware also sees calls rejected for
invalid arguments and calls to unknown tools. The SDK answers those, and any
failing tool, with a result marked ``isError`` rather than an exception; the
middleware records them as FAILURE with the SDK's text (``ValidationError:
...``, ``NotFoundError: Unknown tool: 'x'``). Calls to decorated tools are left
to the decorators, which see the real exception the SDK hides from clients.

mcp 2.3 marks its middleware API provisional; this module relies only on
``ctx.method``, ``ctx.params``, ``ctx.request_id``, ``ctx.session.client_params``
and ``ctx.request``, and reads each defensively. mcp 1.x has no middleware:
there, the decorators alone audit the calls that reach a tool.

This module imports nothing from the SDK until a request arrives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..context import AuditContext
from ._common import CallRecorder, text_or_none

if TYPE_CHECKING:
    from ..service import AuditService

__all__ = ["AuditMiddleware"]

_TOOLS_CALL = "tools/call"
_UNKNOWN_PREFIX = "Unknown tool"
_token_getter: Callable[[], Any] | None = None
_token_getter_resolved = False


def _access_token() -> Any:
    global _token_getter, _token_getter_resolved
    if not _token_getter_resolved:
        _token_getter_resolved = True
        try:
            from mcp.server.auth.middleware.auth_context import get_access_token
        except Exception:
            _token_getter = None
        else:
            _token_getter = get_access_token
    return _token_getter() if _token_getter is not None else None


def _read_caller(ctx: Any) -> AuditContext | None:
    """The caller as mcp 2.x's ``ServerRequestContext`` knows it; ``None`` if unreadable."""
    try:
        params = ctx.session.client_params
        info = getattr(params, "client_info", None) if params is not None else None
        request = getattr(ctx, "request", None)
        headers = getattr(request, "headers", None)
        session_id = headers.get("mcp-session-id") if headers is not None else None
        token = _access_token()
        return AuditContext(
            client_name=text_or_none(getattr(info, "name", None)),
            client_version=text_or_none(getattr(info, "version", None)),
            session_id=text_or_none(session_id),
            request_id=text_or_none(getattr(ctx, "request_id", None)),
            auth_client_id=text_or_none(getattr(token, "client_id", None)),
        )
    except Exception:
        return None


def _first_text(result: Any) -> str:
    content = result.get("content") if isinstance(result, Mapping) else None
    if content is None:
        content = getattr(result, "content", None)
    for block in content or ():
        text = block.get("text") if isinstance(block, Mapping) else getattr(block, "text", None)
        if isinstance(text, str):
            return text
    return ""


def _is_error(result: Any) -> bool:
    if isinstance(result, Mapping):
        return result.get("isError") is True
    return getattr(result, "is_error", None) is True or getattr(result, "isError", None) is True


def _outcome_for(tool_name: str) -> Callable[[Any], str | None]:
    prefix = f"Error executing tool {tool_name}: "

    def outcome(result: Any) -> str | None:
        if not _is_error(result):
            return None
        text = _first_text(result)
        if text.startswith(_UNKNOWN_PREFIX):
            # Same text as fastmcp's, so error groups match across SDKs.
            return f"NotFoundError: Unknown tool: {tool_name!r}"
        if text.startswith(prefix) and "validation error" in text:
            return "ValidationError: " + text[len(prefix) :]
        return "ToolError: " + (text or "the tool returned an error result")

    return outcome


class AuditMiddleware:
    """Audit every tool call, including ones that never reach a tool.

    A ``ServerMiddleware`` for ``MCPServer(middleware=[...])``: it passes every
    other message through untouched. ``service`` receives the entries
    (default: the process's default service, looked up per call).
    """

    __slots__ = ("_recorder",)

    def __init__(self, service: AuditService | None = None) -> None:
        self._recorder = CallRecorder(service)

    async def __call__(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        if getattr(ctx, "method", None) != _TOOLS_CALL:
            return await call_next(ctx)
        params = getattr(ctx, "params", None)
        name = params.get("name") if isinstance(params, Mapping) else None
        tool_name = name if isinstance(name, str) and name else "<invalid tools/call>"
        arguments = params.get("arguments") if isinstance(params, Mapping) else None
        return await self._recorder.run(
            lambda: call_next(ctx),
            tool_name,
            arguments,
            lambda: _read_caller(ctx),
            _outcome_for(tool_name),
        )
