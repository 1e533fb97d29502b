"""The state an :class:`~finops_audit._writer.AuditWriter` shares between its parts.

The writer is one object with five concerns, each in its own module as a
mixin over this state: the hand-off and admission policy (``_handoff``), the
wake-up and flush protocol (``_wakeup``), the drain loop and batching
(``_drain``), fault bookkeeping (``_faults``) and the lifecycle
(``_writer`` itself, with the process-wide hooks in ``_lifecycle``). One
object, not five, because the caller's hand-off must stay a couple of attribute
reads and a ``deque.append``: no indirection on the hot path.

This class only declares: every attribute is set in
``AuditWriter._init_runtime`` (what a forked child must not inherit) or
``AuditWriter.__init__``, and the methods one part calls on another are
declared here for the type checker only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._writer_types import DurableMarker, Entry, FlushMarker, WriterHooks

if TYPE_CHECKING:
    from ._encoding import RowFormatter
    from .config import AuditSettings
    from .storage.base import AuditStore

__all__ = ["WriterState"]


class WriterState:
    """Declarations only (see the module docstring)."""

    # configuration, fixed at construction
    _settings: AuditSettings
    _hooks: WriterHooks | None
    _retention: Callable[[AuditStore], Coroutine[Any, Any, Any]] | None
    _max: int
    _batch: int
    _interval: float
    _window: float
    _policy: str
    _adaptive: bool

    # the hand-off
    _queue: deque[Entry | FlushMarker | DurableMarker]
    _lock: threading.Lock
    _room: threading.Event
    _limit: int
    _rate: float
    _behind_since: float | None
    _write_started: float | None
    _stall_after: float

    # the writer thread and its wake-ups
    _store: AuditStore
    _formatter: RowFormatter
    _thread: threading.Thread | None
    _loop: asyncio.AbstractEventLoop | None
    _waiter: asyncio.Future[None] | None
    _stopped: concurrent.futures.Future[None]
    _running: bool
    _stopping: bool
    _closed: bool
    _wake_sent: bool
    _idle: bool
    _active: bool
    _iterations: int
    _flush_requests: int
    _last_group: int
    _last_commit: float
    _gather_target: int
    _inflight: int
    _pid: int

    # counts and faults
    _written: int
    _dropped: int
    _lost: int
    _failed_writes: int
    _durable_timeouts: int
    _last_error: str | None
    _last_drop_warning: float
    _sanitized: int
    _last_sanitize_warning: float
    _last_crash_log: float
    _crash: str | None
    _gap: list[Any] | None
    _give_up_at: float
    _unopenable: bool

    if TYPE_CHECKING:

        def start(self) -> None: ...
        def _after_fork(self) -> None: ...
        def _wake(self) -> None: ...
        def _drop(self, count: int, reason: str) -> None: ...
        def _lose(self, count: int, reason: str) -> None: ...
        def _record_error(self, exc: BaseException) -> None: ...
        def _log_once(self, what: str, exc: BaseException) -> None: ...
        def _note_unformattable(self, sanitized: int, lost: int, reasons: list[str]) -> None: ...
        def _cleared(self) -> None: ...
        async def _backoff(self, seconds: float) -> None: ...
        def _gap_entry(self) -> Entry | None: ...
        async def _sleep(self, wake_by: float | None = None) -> None: ...
        def _adapt(self, rows: int, seconds: float) -> None: ...
