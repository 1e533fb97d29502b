"""``@audit_tool`` and ``@audit_tool_sync``: capture, time, hand off; nothing else.

Everything that can be decided is decided at decoration time: whether auditing
is on (off returns the function itself), the recorded name, how arguments are
named and encoded, which service receives the entry, and (declared once to the
redaction pre-check) the tool's parameter names. The per-call path is two
clocks, one ``orjson.dumps`` of the arguments, a tuple and one ``deque.append``.

Put the MCP server's decorator outermost::

    @server.tool()
    @audit_tool
    async def check_tag_compliance(...): ...

``@server.tool()`` registers and returns the function it is given; in the
other order the server registers the bare, unaudited function.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _signals
from ._durable import durable_hand_off, durable_offer
from ._encoding import describe_exception, make_param_snapshot
from ._mcp_context import HIDDEN, hidden_context_type, make_capture
from ._prescan import declare_parameters
from ._writer import AuditWriter, Entry, flush_all
from .config import load_settings
from .context import call_slot
from .exceptions import AuditQueueFullError
from .service import get_default_service

if TYPE_CHECKING:
    from .service import AuditService

__all__ = ["audit_tool", "audit_tool_sync"]

logger = logging.getLogger("finops_audit")

P = ParamSpec("P")
R = TypeVar("R")

_SUCCESS = "SUCCESS"
_FAILURE = "FAILURE"
_internal_errors = 0


def _default_writer() -> AuditWriter:
    return get_default_service()._writer


def _prepare(
    fn: Callable[..., Any], name: str | None, service: AuditService | None
) -> tuple[bool, str, Callable[[], AuditWriter], int, bool]:
    """Everything a decorator decides once, from one reading of the settings.

    The last value is durable mode (``AUDIT_DURABILITY=commit``): decided here,
    so the default per-call path never asks.
    """
    settings = service.settings if service is not None else load_settings()
    if settings.logging_enabled and settings.handle_signals:
        _signals.install(flush_all)  # decoration usually happens on the main thread
    tool_name = name if name is not None else getattr(fn, "__name__", None) or repr(fn)
    if not isinstance(tool_name, str) or not tool_name:
        raise TypeError(f"name must be a non-empty string, not {name!r}")
    tool_name = tool_name.encode("utf-8", "backslashreplace").decode("utf-8")
    if service is not None:
        writer = service._writer

        def get_writer() -> AuditWriter:
            return writer

    else:
        get_writer = _default_writer
    durable = settings.durability == "commit"
    return settings.logging_enabled, tool_name, get_writer, settings.max_param_bytes, durable


def _audit_failed(exc: BaseException) -> None:
    # A bug or fault in the audit layer must never reach the tool: count, log once.
    global _internal_errors
    _internal_errors += 1
    if _internal_errors == 1:
        logger.error("finops_audit could not record a tool call: %r", exc, exc_info=exc)


@overload
def audit_tool(
    fn: Callable[P, Coroutine[Any, Any, R]], /
) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def audit_tool(
    *, name: str | None = None, service: AuditService | None = None
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]: ...


def audit_tool(
    fn: Callable[P, Coroutine[Any, Any, R]] | None = None,
    /,
    *,
    name: str | None = None,
    service: AuditService | None = None,
) -> Any:
    """Record every call of an ``async def`` tool in the audit trail.

    Use bare (``@audit_tool``) or with options: ``name`` is the recorded tool
    name (default: the function's ``__name__``), ``service`` the
    :class:`~finops_audit.AuditService` that receives entries (default: the
    process's default service). The tool's result and exceptions pass through
    untouched; a failure (including cancellation) is recorded as FAILURE.
    """
    if fn is None:
        return functools.partial(_audit_async, name=name, service=service)
    return _audit_async(fn, name=name, service=service)


def _audit_async(
    fn: Callable[P, Coroutine[Any, Any, R]],
    *,
    name: str | None,
    service: AuditService | None,
) -> Callable[P, Coroutine[Any, Any, R]]:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"@audit_tool needs an `async def` function, but {fn!r} is not one; "
            "use @audit_tool_sync for a plain `def` tool"
        )
    enabled, tool_name, get_writer, max_bytes, durable = _prepare(fn, name, service)
    if not enabled:
        return fn
    snapshot = make_param_snapshot(fn, max_bytes)
    declare_parameters(fn)  # the writer's redaction pre-check learns the plain names
    capture = make_capture()
    hidden = _accept_hidden_context(fn)
    time_ns = time.time_ns
    perf_ns = time.perf_counter_ns
    get_slot = call_slot.get
    # The names a server may have registered this tool under: the middleware
    # skips a call only when the decorator of *that* tool recorded it.
    marks = (tool_name, getattr(fn, "__name__", tool_name))
    set_slot = call_slot.set
    reset_slot = call_slot.reset

    def offer(entry: Entry) -> AuditWriter | None:
        # Synchronous on purpose: creating and awaiting a coroutine per call
        # would cost more than the hand-off itself. Returns the writer only
        # when the caller has to wait for room (block policy, full queue).
        try:
            writer = get_writer()
            return None if writer.try_submit(entry) else writer
        except AuditQueueFullError:
            raise
        except Exception as exc:
            _audit_failed(exc)
            return None

    if durable:  # returns something with the same asubmit_wait(entry)
        offer = durable_offer(get_writer, _audit_failed)  # type: ignore[assignment]

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        wall = time_ns()
        caller = capture(kwargs.pop(HIDDEN, None) if hidden else None)
        slot = get_slot()
        hide = None
        if slot is not None:
            slot.extend(marks)
            hide = set_slot(None)  # a decorated helper this tool calls is not the tool
        params = snapshot(args, kwargs)
        start = perf_ns()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            elapsed = perf_ns() - start
            error = describe_exception(exc)
            entry: Entry = (tool_name, wall, elapsed, params, _FAILURE, error, caller)
            waiting = offer(entry)
            if waiting is not None:
                await waiting.asubmit_wait(entry)
            raise
        finally:
            if hide is not None:
                reset_slot(hide)
        entry = (tool_name, wall, perf_ns() - start, params, _SUCCESS, None, caller)
        waiting = offer(entry)
        if waiting is not None:
            await waiting.asubmit_wait(entry)
        return result

    _add_hidden_annotation(wrapper, fn, hidden)
    return wrapper


@overload
def audit_tool_sync(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def audit_tool_sync(
    *, name: str | None = None, service: AuditService | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def audit_tool_sync(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    service: AuditService | None = None,
) -> Any:
    """Record every call of a plain ``def`` tool in the audit trail.

    Safe from any thread, with or without an event loop (MCP SDKs run sync
    tools in worker threads). Options as for :func:`audit_tool`.
    """
    if fn is None:
        return functools.partial(_audit_sync, name=name, service=service)
    return _audit_sync(fn, name=name, service=service)


def _audit_sync(
    fn: Callable[P, R], *, name: str | None, service: AuditService | None
) -> Callable[P, R]:
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"@audit_tool_sync needs a plain `def` function, but {fn!r} is `async def`; "
            "use @audit_tool for coroutine functions"
        )
    if not callable(fn):
        raise TypeError(f"@audit_tool_sync needs a function, not {fn!r}")
    enabled, tool_name, get_writer, max_bytes, durable = _prepare(fn, name, service)
    if not enabled:
        return fn
    snapshot = make_param_snapshot(fn, max_bytes)
    declare_parameters(fn)  # the writer's redaction pre-check learns the plain names
    capture = make_capture()
    hidden = _accept_hidden_context(fn)
    time_ns = time.time_ns
    perf_ns = time.perf_counter_ns
    get_slot = call_slot.get
    # The names a server may have registered this tool under: the middleware
    # skips a call only when the decorator of *that* tool recorded it.
    marks = (tool_name, getattr(fn, "__name__", tool_name))
    set_slot = call_slot.set
    reset_slot = call_slot.reset

    def hand_off(entry: Entry) -> None:
        try:
            get_writer().submit(entry)
        except AuditQueueFullError:
            raise
        except Exception as exc:
            _audit_failed(exc)

    if durable:  # same signature; mypy will not rebind a def
        hand_off = durable_hand_off(get_writer, _audit_failed)  # type: ignore[assignment]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        wall = time_ns()
        caller = capture(kwargs.pop(HIDDEN, None) if hidden else None)
        slot = get_slot()
        hide = None
        if slot is not None:
            slot.extend(marks)
            hide = set_slot(None)  # a decorated helper this tool calls is not the tool
        params = snapshot(args, kwargs)
        start = perf_ns()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            elapsed = perf_ns() - start
            error = describe_exception(exc)
            hand_off((tool_name, wall, elapsed, params, _FAILURE, error, caller))
            raise
        finally:
            if hide is not None:
                reset_slot(hide)
        hand_off((tool_name, wall, perf_ns() - start, params, _SUCCESS, None, caller))
        return result

    _add_hidden_annotation(wrapper, fn, hidden)
    return wrapper


def _accept_hidden_context(fn: Callable[..., Any]) -> type | None:
    """mcp 2.x's Context class if the wrapper should ask that SDK to inject one.

    Not when the tool already has a parameter of that name.
    """
    context_type = hidden_context_type()
    if context_type is None:
        return None
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if HIDDEN in params:
        return None
    return context_type


def _add_hidden_annotation(
    wrapper: Callable[..., Any], fn: Callable[..., Any], context_type: type | None
) -> None:
    # mcp 2.x picks the parameter it injects its Context into from the type
    # hints, and the input schema from the signature (through __wrapped__):
    # one extra annotation on the wrapper asks for the Context without
    # changing the schema. A new dict: functools.wraps shares fn's.
    if context_type is not None:
        wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), HIDDEN: context_type}
