"""What the SDK middlewares share: the de-duplication slot and building one entry.

An entry is built exactly as the decorators build theirs (see
:data:`finops_audit._writer.Entry`), so a row written by middleware cannot be
told apart from a decorator's except by what it knows: the arguments as the
client sent them (unvalidated) instead of as the tool received them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import TYPE_CHECKING, Any, TypeVar

from .._encoding import describe_exception, queue_bound, safe_dumps, truncate_encoded
from .._mcp_context import Caller, make_capture
from ..context import AuditContext, call_slot
from ..exceptions import AuditQueueFullError
from ..service import get_default_service

if TYPE_CHECKING:
    from .._writer import Entry
    from ..service import AuditService

__all__ = ["FAILURE", "SUCCESS", "CallRecorder", "text_or_none"]

logger = logging.getLogger("finops_audit")

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"

T = TypeVar("T")


def text_or_none(value: Any) -> str | None:
    """``str(value)``, keeping ``None`` as unknown."""
    return None if value is None else str(value)


def _merge(base: Caller | None, sdk: AuditContext | None) -> Caller | None:
    # ``base`` is what the decorators would capture here (audit_context,
    # OpenTelemetry, an SDK context variable); it wins. The middleware's own
    # reading of the request only fills what is still unknown.
    if sdk is None:
        return base
    from_sdk = (
        sdk.user,
        sdk.client_name,
        sdk.client_version,
        sdk.session_id,
        sdk.request_id,
        sdk.auth_client_id,
    )
    if base is None:
        return (*from_sdk, None, None, None)
    own: tuple[str | None, ...] = (base[0], base[1], base[2], base[3], base[4], base[5])
    k = [b if b is not None else s for b, s in zip(own, from_sdk, strict=True)]
    return (k[0], k[1], k[2], k[3], k[4], k[5], base[6], base[7], base[8])


class CallRecorder:
    """Runs one ``tools/call`` inside a fresh de-duplication slot and records it
    if no decorated tool did.

    The service is looked up per call when none was given, like the bare
    decorators do, so a default service set after the server was built is used.
    """

    __slots__ = ("_capture", "_errors", "_service")

    def __init__(self, service: AuditService | None) -> None:
        self._service = service
        self._capture = make_capture()
        self._errors = 0

    def _target(self) -> AuditService | None:
        try:
            service = self._service if self._service is not None else get_default_service()
        except Exception as exc:
            self._failed(exc)
            return None
        return service if service.settings.logging_enabled else None

    def _failed(self, exc: BaseException) -> None:
        # Auditing must never break the call it audits: count, log once.
        self._errors += 1
        if self._errors == 1:
            logger.error("finops_audit middleware could not record a call: %r", exc, exc_info=exc)

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        tool_name: str,
        arguments: Any,
        read_caller: Callable[[], AuditContext | None],
        outcome: Callable[[T], str | None],
        describe: Callable[[BaseException], str] = describe_exception,
    ) -> T:
        """Await ``call()``; record it unless a decorated tool already did.

        ``outcome`` maps a returned result to ``None`` (success) or an error
        message (an SDK that reports failures as results); a raised exception
        is recorded as FAILURE (message from ``describe``) and re-raised untouched.
        """
        service = self._target()
        if service is None:
            return await call()
        wall = time.time_ns()
        try:
            caller = _merge(self._capture(None), read_caller())
        except Exception as exc:
            self._failed(exc)
            caller = None
        outer = call_slot.get()
        slot: list[str] = []
        token: Token[list[str] | None] = call_slot.set(slot)
        start = time.perf_counter_ns()
        try:
            result = await call()
        except BaseException as exc:
            elapsed = time.perf_counter_ns() - start
            call_slot.reset(token)
            await self._finish(
                service, outer, slot, tool_name, wall, elapsed, arguments, caller, exc, describe
            )
            raise
        elapsed = time.perf_counter_ns() - start
        call_slot.reset(token)
        try:
            error = outcome(result)
        except Exception as exc:
            self._failed(exc)
            error = None
        await self._finish(
            service, outer, slot, tool_name, wall, elapsed, arguments, caller, None, None, error
        )
        return result

    async def _finish(
        self,
        service: AuditService,
        outer: list[str] | None,
        slot: list[str],
        tool_name: str,
        wall: int,
        elapsed: int,
        arguments: Any,
        caller: Caller | None,
        exc: BaseException | None,
        describe: Callable[[BaseException], str] | None,
        error: str | None = None,
    ) -> None:
        if outer is not None:
            # A middleware around this one (nested servers): the call is
            # recorded here or by the tool, so it must not record it again.
            outer.append(tool_name)
        if tool_name in slot:
            return  # the decorated tool recorded this call itself
        try:
            if exc is not None:
                error = (describe or describe_exception)(exc)
            params = safe_dumps(arguments if arguments is not None else {})
            # Only the queue's memory bound here: the writer redacts, then caps.
            max_bytes = queue_bound(service.settings.max_param_bytes)
            if len(params) > max_bytes:
                params = truncate_encoded(params, max_bytes)
            status = SUCCESS if error is None else FAILURE
            entry: Entry = (tool_name, wall, elapsed, params, status, error, caller)
            writer = service._writer
            if not writer.try_submit(entry):
                await writer.asubmit_wait(entry)
        except AuditQueueFullError:
            raise  # the "raise" overflow policy: as the decorators do
        except Exception as exc2:
            self._failed(exc2)
