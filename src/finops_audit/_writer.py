"""The background writer: one object, its parts in one module each.

Shape (see the README's design section for the measurements behind it)::

    tool call ──submit(tuple)──► deque (bounded) ──► writer task ──► store.write_batch
       any thread, ~0.1 µs        wake when a batch     on its own       (one transaction
       no lock, no loop needed    is full or the        event loop       per batch)
                                  queue was empty       thread

* ``_handoff``: the caller's side, the bounded deque and the admission policy
  (block, drop, raise; pacing only past ``max_unwritten_seconds``).
* ``_wakeup``: how callers wake the writer, its sleeps (no timer while idle),
  and ``flush()``.
* ``_drain``: the writer task's loop, batching, retries, group commit.
* ``_faults``: counts, gap rows, logs at most once an interval.
* this module: the lifecycle of one writer (start, close, the thread and its
  private event loop); ``_lifecycle``: the process's (exit, fork, signals).

The writer task runs on a private event loop in a daemon thread, so it is
served even by programs that have no loop, and it is not among the tasks a
host's ``asyncio.run`` cancels at shutdown. If it is cancelled anyway it still
writes what it holds before it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import _lifecycle, _signals
from ._drain import DrainMixin
from ._encoding import RowFormatter
from ._faults import WARN_INTERVAL, FaultsMixin
from ._fieldcrypt import build_cipher
from ._forkgate import gate, never_finalize
from ._handoff import HandoffMixin
from ._lifecycle import flush_all
from ._wakeup import WakeupMixin
from ._writer_types import GAP_TOOL_NAME, AuditStats, DurableMarker, Entry, FlushMarker, WriterHooks
from .config import AuditSettings
from .exceptions import AuditClosedError, AuditStorageError, AuditTimeoutError
from .redaction import Redactor
from .storage.base import AuditStore

__all__ = ["GAP_TOOL_NAME", "AuditStats", "AuditWriter", "Entry", "WriterHooks", "flush_all"]

logger = logging.getLogger("finops_audit")

T = TypeVar("T")

#: Seconds a shutdown keeps retrying a file that cannot be opened at all.
_DEAD_GRACE = 0.2


class AuditWriter(HandoffMixin, WakeupMixin, DrainMixin, FaultsMixin):
    """Owns the queue and the writer thread of one :class:`~finops_audit.AuditService`."""

    def __init__(
        self,
        store_factory: Callable[[], AuditStore],
        settings: AuditSettings,
        redactor: Redactor | None = None,
        retention: Callable[[AuditStore], Coroutine[Any, Any, Any]] | None = None,
        hooks: WriterHooks | None = None,
    ) -> None:
        self._store_factory = store_factory
        self._hooks = hooks
        self._retention = retention
        self._redactor = redactor
        self._settings = settings
        self._max = settings.queue_size
        self._batch = settings.batch_size
        # Only a queue of ten batches or more has room to adapt in.
        self._adaptive = (
            settings.overflow_policy == "block" and settings.queue_size >= 10 * settings.batch_size
        )
        self._interval = settings.flush_interval
        self._window = settings.max_unwritten_seconds
        self._policy = settings.overflow_policy
        self._init_runtime()
        self._closed = False
        _lifecycle.track(self)

    def _init_runtime(self) -> None:
        # Everything a forked child must not inherit lives here.
        self._queue = deque()
        self._lock = threading.Lock()
        self._room = threading.Event()
        self._store = self._store_factory()
        self._formatter = RowFormatter(
            self._settings.max_param_bytes,
            self._redactor,
            self._settings.max_error_bytes,
            build_cipher(self._settings, self._redactor),
        )
        self._thread = None
        self._loop = None
        self._waiter = None
        self._stopped = concurrent.futures.Future()
        self._running = False
        self._stopping = False
        self._wake_sent = False
        self._idle = False
        self._active = False  # wrote since the last idle sleep (one window's linger)
        self._iterations = 0  # writer wake-ups (tests check an idle writer has none)
        self._inflight = 0
        self._written = 0
        self._dropped = 0
        self._lost = 0
        self._failed_writes = 0
        self._durable_timeouts = 0
        self._last_error = None
        self._last_drop_warning = -WARN_INTERVAL  # the first drop is always warned about
        self._sanitized = 0  # entries stored in a safe form (see _salvage)
        self._last_sanitize_warning = -WARN_INTERVAL
        self._last_crash_log = -WARN_INTERVAL
        self._crash = None  # why the writer thread last stopped unexpectedly
        self._gap = None  # [count, first_ns, last_ns, reason]
        self._give_up_at = float("inf")
        self._unopenable = False  # the last fault: the file cannot be opened at all
        # The admission bound (see _handoff): the whole queue, until the writer
        # has been behind for max_unwritten_seconds; then that many seconds of writing.
        self._limit = self._max
        self._rate = 0.0
        self._behind_since = None
        self._write_started = None
        # Flushes and durable waiters in the queue (a hint: a lost update costs one interval).
        self._flush_requests = 0
        self._last_group = 0  # durable waiters of the last commit (group commit, _wakeup)
        self._last_commit = 0.0
        self._gather_target = 0  # while gathering a group: the arrival that wakes the writer
        self._stall_after = max(0.25, 4 * self._interval)
        self._pid = os.getpid()

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Start the writer thread and open the store (once); waits for the first open."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._running:
                return
            if self._closed:
                raise AuditClosedError("this audit service is closed; create a new AuditService")
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            if self._stopped.done():  # a writer that stopped unexpectedly restarts
                self._stopped = concurrent.futures.Future()
            thread = threading.Thread(
                target=self._thread_main,
                args=(ready, self._stopped),
                name="finops-audit-writer",
                daemon=True,
            )
            thread.start()
            self._thread = thread
            try:
                ready.result(timeout=self._settings.busy_timeout + 5.0)
            except concurrent.futures.TimeoutError:
                logger.warning("audit database is slow to open; writing in the background")
            self._running = True
            _lifecycle.running.add(self)
        if self._settings.handle_signals:
            _signals.install(flush_all)
        if self._hooks is not None:
            self._hooks.started()

    def close(self, timeout: float | None = None) -> None:
        """Drain everything accepted, stop the writer. Safe to call twice."""
        wait = self._settings.close_timeout if timeout is None else timeout
        thread = self._begin_close(wait)
        if thread is None:
            return
        try:
            self._stopped.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            raise AuditTimeoutError(
                f"audit writer did not drain within {wait}s; "
                f"{len(self._queue) + self._inflight} entries were still pending"
            ) from None
        thread.join(timeout=wait)
        self._finish_close()

    async def aclose(self, timeout: float | None = None, *, run_hooks: bool = True) -> None:
        """:meth:`close` for async code: awaits the drain without blocking the loop.

        ``run_hooks=False``: the caller closes the forwarders itself, off the loop.
        """
        wait = self._settings.close_timeout if timeout is None else timeout
        thread = self._begin_close(wait)
        if thread is None:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._stopped), wait)
        except asyncio.TimeoutError:
            raise AuditTimeoutError(
                f"audit writer did not drain within {wait}s; "
                f"{len(self._queue) + self._inflight} entries were still pending"
            ) from None
        self._finish_close(run_hooks=run_hooks)

    def _begin_close(self, wait: float) -> threading.Thread | None:
        if self._pid != os.getpid():
            self._after_fork()
        # A fault that does not clear is given up on before close() stops
        # waiting, so close() can say how many entries were lost. A file that
        # cannot be opened at all gets one short grace: shutdown stays fast.
        grace = min(wait * 0.8, _DEAD_GRACE) if self._unopenable else wait * 0.8
        self._give_up_at = time.monotonic() + grace
        if self._crash is not None and not self._running and not self._closed and self._queue:
            # A writer that stopped unexpectedly still owes its queue: restart it to drain.
            try:
                self.start()
            except Exception as exc:
                logger.error("finops_audit could not restart its writer to drain: %r", exc)
        with self._lock:
            first = not self._closed
            self._closed = True
            thread = self._thread if self._running else None
            if thread is not None and first:
                self._stopping = True
                # New calls now take the slow path and are counted as dropped,
                # so a drain cannot be outrun by callers that keep calling.
                self._running = False
        if thread is None:
            if self._queue:  # accepted by nobody's writer: count, never silently
                self._strand("the service closed")
            if first:
                self._raise_if_lost()
            return None
        self._wake()
        return thread

    def _finish_close(self, run_hooks: bool = True) -> None:
        _lifecycle.running.discard(self)
        self._strand("they arrived while the service was closing")
        if self._hooks is not None and run_hooks:
            try:
                self._hooks.closed()
            except Exception:
                logger.exception("finops_audit: closing the forwarders failed")
        self._raise_if_lost()

    def _strand(self, reason: str) -> None:
        """Empty the queue at close: entries counted dropped, durable waiters told."""
        items = list(self._queue)
        self._queue.clear()
        stranded = [e for e in items if type(e) is not FlushMarker]
        if stranded:
            self._drop(len(stranded), reason)
        for item in stranded:
            if type(item) is DurableMarker:
                item.fail(f"was dropped: {reason}")

    def _raise_if_lost(self) -> None:
        if self._lost:
            raise AuditStorageError(
                f"{self._lost} audit entries could not be written to {self._store.describe()}: "
                f"{self._last_error or self._crash}"
            )

    def _after_fork(self) -> None:
        # Called in a forked child: the writer thread and the store's
        # connections belong to the parent. Start over, unstarted. The old
        # store is never closed nor finalised (see _forkgate for why).
        never_finalize(self._store)
        closed = self._closed
        self._init_runtime()
        self._closed = closed

    # ------------------------------------------------------------------ queries

    def run(
        self, make: Callable[[AuditStore], Coroutine[Any, Any, T]], timeout: float | None = None
    ) -> T:
        """Run ``make(store)`` on the writer's loop and wait for its result."""
        return self._submit_coro(make).result(timeout)

    async def arun(self, make: Callable[[AuditStore], Coroutine[Any, Any, T]]) -> T:
        return await asyncio.wrap_future(self._submit_coro(make))

    def _submit_coro(
        self, make: Callable[[AuditStore], Coroutine[Any, Any, T]]
    ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise AuditClosedError("this audit service is closed; create a new AuditService")
        self.start()
        loop = self._loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(_gated(make(self._store)), loop)

    def stats(self) -> AuditStats:
        pending = sum(1 for e in list(self._queue) if type(e) is not FlushMarker) + self._inflight
        return AuditStats(
            accepted=self._written + pending + self._lost,
            written=self._written,
            pending=pending,
            dropped=self._dropped,
            lost=self._lost,
            failed_writes=self._failed_writes,
            last_error=self._last_error,
            running=self._running,
            closed=self._closed,
            durable_timeouts=self._durable_timeouts,
        )

    # ------------------------------------------------------------------ the writer thread

    def _thread_main(
        self, ready: concurrent.futures.Future[None], stopped: concurrent.futures.Future[None]
    ) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:
            # Only a BaseException (or a cancelled task) gets here. Flushes
            # waiting for this thread raise AuditWriterError (they watch
            # ``stopped``); the queue is kept for the next start.
            if not self._stopping:
                self._crash = f"{type(exc).__name__}: {exc}"
                logger.error("finops_audit writer stopped unexpectedly", exc_info=exc)
        finally:
            self._running = False
            self._loop = None
            loop.close()
            if not stopped.done():
                stopped.set_result(None)

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            try:
                async with gate.held():
                    await self._store.open()
            except Exception as exc:
                self._record_error(exc)
            finally:
                ready.set_result(None)
            await self._run()
        except asyncio.CancelledError:
            # Someone cancelled the writer task: write what it holds, then end.
            self._stopping = True
            await self._drain()
            raise
        finally:
            self._running = False
            try:
                await self._drain()  # entries that raced with the stop
            finally:
                try:
                    async with gate.held():
                        await self._store.close()  # always: aiosqlite reader threads block exit
                except Exception:
                    logger.debug("closing the audit store", exc_info=True)


async def _gated(coro: Coroutine[Any, Any, T]) -> T:
    """A store operation run on the writer's loop, kept apart from ``os.fork()``."""
    async with gate.held():
        return await coro
