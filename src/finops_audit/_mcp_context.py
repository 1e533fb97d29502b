"""Read the caller from the MCP SDK serving the current request, with no middleware.

Resolved once (at the first decoration) from what is installed; per call it is
a couple of context-variable reads. Hooks, least fragile first (measured with
mcp 1.30, mcp 2.3 and fastmcp 4.2.3; see the README):

* fastmcp: the ``_current_context`` context variable (client info, request id),
  ``fastmcp_request_ctx`` for the HTTP session id, ``get_access_token()``.
* mcp 1.x: ``mcp.server.lowlevel.server.request_ctx`` (client info, request id,
  the ``mcp-session-id`` header), ``get_access_token()``.
* mcp 2.x sets no context variable. Its ``MCPServer`` injects a ``Context`` into
  any parameter annotated with it, so the wrapper carries one extra, hidden
  annotation (:data:`HIDDEN`): the signature, and so the input schema, are
  unchanged; the wrapper pops the injected object before calling the tool.
* OpenTelemetry, when installed: the active span's trace and span ids.

Anything unexpected (an SDK version that moved things) reads as "no context":
the call is recorded without it, never failed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any, cast

from .context import AuditContext, _current

__all__ = ["HIDDEN", "Caller", "Capture", "hidden_context_type", "make_capture"]

logger = logging.getLogger("finops_audit")

#: Keyword the mcp 2.x ``MCPServer`` is asked to inject its ``Context`` into.
HIDDEN = "_finops_audit_ctx"

#: (user, client_name, client_version, session_id, request_id, auth_client_id,
#:  trace_id, span_id, labels)
Caller = tuple[
    "str | None",
    "str | None",
    "str | None",
    "str | None",
    "str | None",
    "str | None",
    "str | None",
    "str | None",
    "dict[str, str] | None",
]
Capture = Callable[[Any], "Caller | None"]
Reader = Callable[[Any], "AuditContext | None"]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _fastmcp_reader() -> Reader | None:
    try:
        from fastmcp.server.context import _current_context
        from fastmcp.server.dependencies import fastmcp_request_ctx, get_access_token
    except Exception:
        return None

    def read(_hidden: Any) -> AuditContext | None:
        ctx = _current_context.get(None)
        if ctx is None:
            return None
        try:
            params = ctx.session.client_params
            info = getattr(params, "client_info", None) if params is not None else None
            request = fastmcp_request_ctx.get(None)
            session = None
            if request is not None:
                connection = getattr(request.session, "_connection", None)
                session = getattr(connection, "session_id", None)
            token = get_access_token()
            return AuditContext(
                client_name=_str(getattr(info, "name", None)),
                client_version=_str(getattr(info, "version", None)),
                session_id=_str(session),
                request_id=_str(ctx.request_id),
                auth_client_id=_str(getattr(token, "client_id", None)),
            )
        except Exception:
            return None

    return read


def _mcp1_reader() -> Reader | None:
    try:
        # mcp 1.x only (mypy sees whichever mcp is installed)
        from mcp.server.lowlevel.server import request_ctx  # type: ignore[attr-defined,unused-ignore]
    except Exception:
        return None
    token_getter = _mcp_token_getter()

    def read(_hidden: Any) -> AuditContext | None:
        rc = request_ctx.get(None)
        if rc is None:
            return None
        try:
            params = rc.session.client_params
            info = getattr(params, "clientInfo", None) if params is not None else None
            request = getattr(rc, "request", None)
            headers = getattr(request, "headers", None)
            session = headers.get("mcp-session-id") if headers is not None else None
            token = token_getter() if token_getter is not None else None
            return AuditContext(
                client_name=_str(getattr(info, "name", None)),
                client_version=_str(getattr(info, "version", None)),
                session_id=_str(session),
                request_id=_str(rc.request_id),
                auth_client_id=_str(getattr(token, "client_id", None)),
            )
        except Exception:
            return None

    return read


def _mcp_token_getter() -> Callable[[], Any] | None:
    try:
        from mcp.server.auth.middleware.auth_context import get_access_token
    except Exception:
        return None
    return cast("Callable[[], Any]", get_access_token)


def hidden_context_type() -> type | None:
    """mcp 2.x's injectable ``Context`` class, if that SDK is installed."""
    if not _installed("mcp.server.mcpserver"):
        return None
    try:
        from mcp.server.mcpserver import Context
    except Exception:
        return None
    return cast("type", Context)


def _mcp2_reader() -> Reader | None:
    if hidden_context_type() is None:
        return None
    token_getter = _mcp_token_getter()

    def read(hidden: Any) -> AuditContext | None:
        if hidden is None:
            return None
        try:
            rc = hidden.request_context  # ValueError outside a request
            params = rc.session.client_params
            info = getattr(params, "client_info", None) if params is not None else None
            headers = hidden.headers or {}
            token = token_getter() if token_getter is not None else None
            return AuditContext(
                client_name=_str(getattr(info, "name", None)),
                client_version=_str(getattr(info, "version", None)),
                session_id=_str(headers.get("mcp-session-id")),
                request_id=_str(rc.request_id),
                auth_client_id=_str(getattr(token, "client_id", None)),
            )
        except Exception:
            return None

    return read


def _otel_reader() -> Callable[[], tuple[str, str] | None] | None:
    if not _installed("opentelemetry"):
        return None
    try:
        from opentelemetry import trace  # type: ignore[attr-defined, unused-ignore]
    except Exception:
        return None
    get_span = trace.get_current_span

    def read() -> tuple[str, str] | None:
        try:
            sc = get_span().get_span_context()
            if not sc.is_valid:
                return None
            return format(sc.trace_id, "032x"), format(sc.span_id, "016x")
        except Exception:
            return None

    return read


_capture: Capture | None = None


def make_capture() -> Capture:
    """The per-call caller reader for this process's SDKs (built once)."""
    global _capture
    if _capture is not None:
        return _capture
    readers: list[Reader] = []
    for build, module in (
        (_fastmcp_reader, "fastmcp"),
        (_mcp1_reader, "mcp.server.lowlevel"),
        (_mcp2_reader, "mcp.server.mcpserver"),
    ):
        if _installed(module):
            reader = build()
            if reader is not None:
                readers.append(reader)
    otel = _otel_reader()
    get_explicit = _current.get
    sdk_readers = tuple(readers)

    def capture(hidden: Any) -> Caller | None:
        explicit = get_explicit()
        sdk: AuditContext | None = None
        for reader in sdk_readers:
            sdk = reader(hidden)
            if sdk is not None:
                break
        span = otel() if otel is not None else None
        if explicit is None and sdk is None and span is None:
            return None
        if sdk is not None and explicit is not None:
            ctx = sdk.merged(explicit)
        else:
            ctx = explicit or sdk or AuditContext()
        trace_id, span_id = span if span is not None else (None, None)
        return (
            ctx.user,
            ctx.client_name,
            ctx.client_version,
            ctx.session_id,
            ctx.request_id,
            ctx.auth_client_id,
            trace_id,
            span_id,
            ctx.labels or None,
        )

    _capture = capture
    return capture
