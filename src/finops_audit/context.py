"""Who is calling: ``audit_context(...)`` and what the decorators record about the caller.

A context variable, so it follows the call across ``await`` and into the
worker threads AnyIO runs sync tools in (it copies context variables).
Decorators read it once per call; nested contexts merge, inner values win::

    with audit_context(user="alice@example.com", team="finops"):
        await check_tag_compliance(...)

    async with audit_context(session_id=sid, request_id=rid):
        ...

Inside an MCP tool the SDK's own request context fills the client name and
version, request id, session id and authenticated client id automatically
(:mod:`finops_audit._mcp_context`); values set here take precedence.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field, fields, replace
from types import TracebackType
from typing import Any

__all__ = ["AuditContext", "audit_context", "current_audit_context"]


@dataclass(frozen=True)
class AuditContext:
    """The caller of a tool, as far as it is known. ``None`` means unknown."""

    user: str | None = None
    client_name: str | None = None
    client_version: str | None = None
    session_id: str | None = None
    request_id: str | None = None
    auth_client_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def merged(self, inner: AuditContext) -> AuditContext:
        """``inner``'s known values over this one's; labels merged."""
        updates: dict[str, Any] = {
            f.name: getattr(inner, f.name)
            for f in fields(self)
            if f.name != "labels" and getattr(inner, f.name) is not None
        }
        if inner.labels:
            updates["labels"] = {**self.labels, **inner.labels}
        return replace(self, **updates)


_current: ContextVar[AuditContext | None] = ContextVar("finops_audit_context", default=None)

#: Set by the MCP middlewares around one ``tools/call``: decorators append the
#: tool name, so the middleware knows the call is already in the trail. A
#: mutable list, because AnyIO's worker threads see a copy of the context.
call_slot: ContextVar[list[str] | None] = ContextVar("finops_audit_call_slot", default=None)


def current_audit_context() -> AuditContext | None:
    """The context set by the innermost ``audit_context`` around this point, if any."""
    return _current.get()


def _text(name: str, value: object) -> str | None:
    if value is None:
        return None
    # Plain text even from subclasses: their own __str__ (which may raise, or
    # change between calls) is never consulted.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)
    raise TypeError(f"audit_context({name}=...) takes a string, not {type(value).__name__}")


class audit_context:
    """Set who is calling for the tool calls made inside it (sync and async ``with``).

    ``labels`` are any extra ``key=value`` strings (team, tenant, ticket, ...).
    """

    __slots__ = ("_context", "_tokens")

    def __init__(
        self,
        *,
        user: str | None = None,
        client_name: str | None = None,
        client_version: str | None = None,
        session_id: str | None = None,
        request_id: str | int | None = None,
        auth_client_id: str | None = None,
        **labels: str,
    ) -> None:
        self._context = AuditContext(
            user=_text("user", user),
            client_name=_text("client_name", client_name),
            client_version=_text("client_version", client_version),
            session_id=_text("session_id", session_id),
            request_id=_text("request_id", request_id),
            auth_client_id=_text("auth_client_id", auth_client_id),
            labels={k: _text(k, v) or "" for k, v in labels.items()},
        )
        self._tokens: list[Token[AuditContext | None]] = []

    def __enter__(self) -> AuditContext:
        outer = _current.get()
        context = self._context if outer is None else outer.merged(self._context)
        self._tokens.append(_current.set(context))
        return context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> AuditContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
