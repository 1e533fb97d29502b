"""fastmcp middleware that audits every ``tools/call`` (tested with fastmcp 4.2.3).

Register it on the server::

    from fastmcp import FastMCP
    from finops_audit.integrations.fastmcp import AuditMiddleware

    server = FastMCP("finops", middleware=[AuditMiddleware()])

fastmcp runs ``on_call_tool`` around argument validation and tool lookup, so
the middleware sees what a decorator cannot: calls rejected for invalid
arguments (``ValidationError``) and calls to unknown tools (``NotFoundError``).
It records those, and calls to tools that are not decorated, with the caller
(client name and version, request id, session id, authenticated client id,
``audit_context``). A call to a decorated tool is left to the decorator, which
records it with the validated arguments: no call is recorded twice.

Importing this module imports fastmcp; ``import finops_audit`` never does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastmcp.server.middleware import Middleware

from .._encoding import describe_exception
from ..context import AuditContext
from ._common import CallRecorder, text_or_none

if TYPE_CHECKING:
    from ..service import AuditService

__all__ = ["AuditMiddleware"]


def _read_caller(fastmcp_context: Any) -> AuditContext | None:
    """The caller as fastmcp's request ``Context`` knows it; ``None`` if unreadable."""
    if fastmcp_context is None:
        return None
    try:
        params = fastmcp_context.session.client_params
        info = getattr(params, "client_info", None) if params is not None else None
        request_id = fastmcp_context.request_id
    except Exception:
        return None
    return AuditContext(
        client_name=text_or_none(getattr(info, "name", None)),
        client_version=text_or_none(getattr(info, "version", None)),
        request_id=text_or_none(request_id),
    )


def _describe(exc: BaseException) -> str:
    # fastmcp re-raises a failing tool's exception as ToolError("Error calling
    # tool 'x': ...") from the original; the original is what a decorator
    # would have recorded, so record that.
    cause = exc.__cause__
    if type(exc).__name__ == "ToolError" and cause is not None:
        return describe_exception(cause)
    return describe_exception(exc)


class AuditMiddleware(Middleware):  # type: ignore[misc,unused-ignore]
    """Audit every tool call, including ones that never reach a tool.

    ``service`` receives the entries (default: the process's default service,
    looked up per call, as the bare decorators do).
    """

    def __init__(self, service: AuditService | None = None) -> None:
        super().__init__()
        self._recorder = CallRecorder(service)

    async def on_call_tool(self, context: Any, call_next: Any) -> Any:
        """Run the call inside a fresh de-duplication slot; record it if no decorator did."""
        message = context.message
        name = getattr(message, "name", None)
        tool_name = name if isinstance(name, str) and name else "<invalid tools/call>"
        arguments = getattr(message, "arguments", None)
        fastmcp_context = getattr(context, "fastmcp_context", None)
        return await self._recorder.run(
            lambda: call_next(context),
            tool_name,
            arguments,
            lambda: _read_caller(fastmcp_context),
            _outcome,
            describe=_describe,
        )


def _outcome(result: Any) -> str | None:
    # fastmcp raises for failures; a tool may still answer with is_error set.
    if getattr(result, "is_error", False) is True:
        return "ToolError: " + _first_text(getattr(result, "content", None))
    return None


def _first_text(content: Any) -> str:
    try:
        for block in content or ():
            text = getattr(block, "text", None)
            if isinstance(text, str):
                return text
    except Exception:
        pass
    return "the tool returned an error result"
