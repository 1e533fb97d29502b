"""The background writer: a bounded hand-off, batching, flush, shutdown, lifecycle.

Shape (see the README's design section for the measurements behind it)::

    tool call ──submit(tuple)──► deque (bounded) ──► writer task ──► store.write_batch
       any thread, ~0.1 µs        wake only when a      on its own       (aiosqlite,
       no lock, no loop needed    batch is full         event loop       one transaction
                                                        thread           per batch)

* The hand-off is ``deque.append``: thread-safe under the GIL, 11 ns, and needs
  no event loop in the calling thread (mcp 2.x and fastmcp run sync tools in
  worker threads without one). ``asyncio.Queue`` is not thread-safe and
  ``call_soon_threadsafe`` costs about 1 µs, so the writer is woken only when
  a batch is full, a flush is requested, or the flush interval expires.
* The writer task runs on a private event loop in a daemon thread, so it is
  served even by programs that have no loop, and it is not among the tasks a
  host's ``asyncio.run`` cancels at shutdown. If it is cancelled anyway it
  still writes what it holds before it ends.
* ``flush()`` appends a marker and waits for the writer to reach it: FIFO order
  makes that "everything accepted before the call is committed".
* Shutdown drains everything: ``close()``, and a hook that runs when the
  interpreter exits, before threads are joined (aiosqlite's connection thread
  is not a daemon, and Python 3.12 cannot start threads in ``atexit``).
* After ``os.fork()`` the child gets a fresh, unstarted writer; entries the
  parent had queued stay the parent's to write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import _signals
from ._encoding import RowFormatter, safe_dumps
from ._fieldcrypt import build_cipher
from ._forkgate import gate, never_finalize
from ._mcp_context import Caller
from ._salvage import format_rows
from .config import AuditSettings
from .exceptions import (
    AuditClosedError,
    AuditQueueFullError,
    AuditStorageError,
    AuditTimeoutError,
    AuditWriterError,
)
from .forwarding._forwarder import ForwardStats
from .forwarding._forwarder import close_all as close_forwarders
from .redaction import Redactor
from .storage.base import AuditStore, Row

__all__ = ["GAP_TOOL_NAME", "AuditStats", "AuditWriter", "Entry", "WriterHooks", "flush_all"]

logger = logging.getLogger("finops_audit")

T = TypeVar("T")

#: What a decorator hands over: (tool_name, start wall-clock ns, duration ns,
#: parameters as JSON bytes, status value, error message or None, caller or None).
Entry = tuple[str, int, int, bytes, str, "str | None", "Caller | None"]

_WARN_INTERVAL = 10.0
#: Seconds a shutdown keeps retrying a file that cannot be opened at all.
_DEAD_GRACE = 0.2
_RETENTION_INTERVAL = 3600.0

#: ``tool_name`` of the rows that mark a gap: entries that were dropped.
GAP_TOOL_NAME = "__audit_gap__"


@dataclass(frozen=True)
class WriterHooks:
    """What a forwarder needs to know of its writer (all called from writer threads).

    ``started`` once the writer runs (the buffer file exists), ``committed``
    after each batch commits (cheap: sets an event), ``closed`` after the
    writer drained at ``close()`` or at exit, with the seconds left to use.
    """

    started: Callable[[], None]
    committed: Callable[[], None]
    closed: Callable[[], None]


@dataclass(frozen=True)
class AuditStats:
    """A health view of one service's writer.

    ``accepted`` counts entries taken into the queue (``written + pending +
    lost``); ``dropped`` counts entries refused because the queue was full or
    the service closed; ``lost`` counts accepted entries that could not be
    written before ``close()`` gave up. ``last_error`` is the latest database
    fault, ``None`` once a write succeeds again.
    """

    accepted: int
    written: int
    pending: int
    dropped: int
    lost: int
    failed_writes: int
    last_error: str | None
    running: bool
    closed: bool
    #: Forwarding (``AUDIT_DB_URL`` / ``AUDIT_OTLP_ENDPOINT``): committed entries
    #: not yet delivered, the age of the oldest, the latest failure; the worst
    #: of all destinations, each in ``forwarding`` by name ("postgres", "otlp").
    forward_lag_entries: int = 0
    forward_lag_seconds: float = 0.0
    forward_last_error: str | None = None
    forwarding: dict[str, ForwardStats] = field(default_factory=dict)


class _FlushMarker:
    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AuditWriter:
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
        self._policy = settings.overflow_policy
        self._init_runtime()
        self._closed = False
        _track(self)

    def _init_runtime(self) -> None:
        # Everything a forked child must not inherit lives here.
        self._queue: deque[Entry | _FlushMarker] = deque()
        self._lock = threading.Lock()
        self._room = threading.Event()
        self._store: AuditStore = self._store_factory()
        self._formatter = RowFormatter(
            self._settings.max_param_bytes,
            self._redactor,
            self._settings.max_error_bytes,
            build_cipher(self._settings, self._redactor),
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._running = False
        self._stopping = False
        self._wake_sent = False
        self._inflight = 0
        self._written = 0
        self._dropped = 0
        self._lost = 0
        self._failed_writes = 0
        self._last_error: str | None = None
        self._last_drop_warning = -_WARN_INTERVAL  # the first drop is always warned about
        self._sanitized = 0  # entries stored in a safe form (see _salvage)
        self._last_sanitize_warning = -_WARN_INTERVAL
        self._last_crash_log = -_WARN_INTERVAL
        self._crash: str | None = None  # why the writer thread last stopped unexpectedly
        self._gap: list[Any] | None = None  # [count, first_ns, last_ns, reason]
        self._give_up_at = float("inf")
        self._unopenable = False  # the last fault: the file cannot be opened at all
        # Under the block policy callers wait once the queue holds about one
        # flush interval of the writer's measured throughput (plus a batch):
        # that bounds what a SIGKILL can lose. During a database fault the
        # whole queue_size buffers instead. drop/raise always use queue_size.
        self._limit = min(self._max, self._batch * 10) if self._adaptive else self._max
        self._rate = 0.0
        self._write_started: float | None = None
        # Flushes waiting in the queue (a hint: a lost update costs one interval).
        self._flush_requests = 0
        self._stall_after = max(0.25, 4 * self._interval)
        self._pid = os.getpid()

    # ------------------------------------------------------------------ producers

    def submit(self, entry: Entry) -> None:
        """Hand one entry over; the caller's whole cost. Never raises, except
        :class:`AuditQueueFullError` under the ``raise`` policy."""
        q = self._queue
        if self._running and len(q) < self._limit:
            q.append(entry)
            if len(q) >= self._batch and not self._wake_sent:
                self._wake()
            return
        self._submit_slow(entry)

    def try_submit(self, entry: Entry) -> bool:
        """Like :meth:`submit`, but returns ``False`` instead of blocking for room.

        Async callers use it and then ``await`` :meth:`asubmit_wait`, so
        backpressure never blocks their event loop.
        """
        q = self._queue
        if self._running and len(q) < self._limit:
            q.append(entry)
            if len(q) >= self._batch and not self._wake_sent:
                self._wake()
            return True
        if self._policy == "block" and self._running and not self._closed:
            return False
        self._submit_slow(entry)
        return True

    async def asubmit_wait(self, entry: Entry) -> None:
        """Wait (without blocking the loop) for room, up to ``block_timeout``, then submit."""
        deadline = time.monotonic() + self._settings.block_timeout
        delay = 0.0005
        q = self._queue
        try:
            while len(q) >= self._limit:
                verdict = self._room_verdict(deadline)
                if verdict == "drop":
                    self._drop(1, "the queue stayed full for block_timeout")
                    return
                if verdict == "admit":
                    break
                self._wake()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)
        except asyncio.CancelledError:
            # The caller is going away; its entry is not: one over the bound.
            if self._running:
                self._admit(entry)
            else:
                self._drop(1, "the service is closed")
            raise
        self._admit(entry)

    def _room_verdict(self, deadline: float) -> str:
        """While a blocked caller waits: keep ``"wait"``ing, ``"admit"`` or ``"drop"``.

        The adaptive bound only paces callers: once their wait is over, or the
        writer is stuck in a write (a lock held by another process), they are
        admitted as long as the hard ``queue_size`` has room. Entries are
        dropped (counted) only when ``queue_size`` itself is full: after the
        wait, or at once during a recorded database fault.
        """
        if not self._running:
            return "drop"
        over = time.monotonic() >= deadline
        if len(self._queue) < self._max:
            return "admit" if over or self._stalled() else "wait"
        return "drop" if over or self._last_error is not None else "wait"

    def _admit(self, entry: Entry) -> None:
        q = self._queue
        q.append(entry)
        if len(q) >= self._batch and not self._wake_sent:
            self._wake()

    def _submit_slow(self, entry: Entry) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if not self._running:
            if self._closed:
                self._drop(1, "the service is closed")
                return
            try:
                self.start()
            except Exception as exc:
                self._drop(1, f"the writer could not start: {exc}")
                return
            if len(self._queue) < self._limit:
                self.submit(entry)
                return
        if self._policy == "drop":
            self._drop(1, "the queue is full (policy drop)")
            return
        if self._policy == "raise":
            self._drop(1, "the queue is full (policy raise)")
            raise AuditQueueFullError(
                f"audit queue is full ({self._max} entries); the database is not keeping up"
            )
        deadline = time.monotonic() + self._settings.block_timeout
        q = self._queue
        while len(q) >= self._limit:
            verdict = self._room_verdict(deadline)
            if verdict == "drop":
                self._drop(1, "the queue stayed full for block_timeout")
                return
            if verdict == "admit":
                break
            self._room.clear()
            if len(q) < self._limit:
                break
            self._wake()
            self._room.wait(min(max(deadline - time.monotonic(), 0.001), 0.05))
        self._admit(entry)

    def _stalled(self) -> bool:
        """Is a write stuck (another process holds the lock, a slow disk)?

        Then the adaptive bound would only make callers wait on a writer that
        cannot drain: open the whole queue_size, as for a recorded fault.
        """
        started = self._write_started
        if started is None or time.monotonic() - started < self._stall_after:
            return False
        self._limit = self._max
        return True

    def _mark_gap(self, count: int, reason: str) -> None:
        """Add ``count`` missing entries to the next gap row (the caller holds the lock)."""
        wall = time.time_ns()
        gap = self._gap
        if gap is None:
            self._gap = [count, wall, wall, reason]
        else:
            gap[0] += count
            gap[2] = wall
            gap[3] = reason

    def _drop(self, count: int, reason: str) -> None:
        with self._lock:
            self._dropped += count
            self._mark_gap(count, reason)
            now = time.monotonic()
            if now - self._last_drop_warning < _WARN_INTERVAL:
                return
            self._last_drop_warning = now
            total = self._dropped
        logger.warning(
            "finops_audit dropped audit entries because %s (%d dropped so far)", reason, total
        )

    def _wake(self) -> None:
        self._wake_sent = True
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._on_wake)
            except RuntimeError:  # the loop has closed; nothing to wake
                pass

    def _on_wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
            _running.add(self)
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
                self._drop(sum(1 for e in self._queue if type(e) is tuple), "the service closed")
                self._queue.clear()
            if first:
                self._raise_if_lost()
            return None
        self._wake()
        return thread

    def _finish_close(self, run_hooks: bool = True) -> None:
        _running.discard(self)
        stranded = [e for e in self._queue if type(e) is tuple]
        self._queue.clear()
        if stranded:
            self._drop(len(stranded), "they arrived while the service was closing")
        if self._hooks is not None and run_hooks:
            try:
                self._hooks.closed()
            except Exception:
                logger.exception("finops_audit: closing the forwarders failed")
        self._raise_if_lost()

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

    # ------------------------------------------------------------------ flush & query

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything accepted before the call is committed.

        Returns or raises, never hangs: it also watches the writer thread, so
        a writer that stops first raises :class:`AuditWriterError` (or
        :class:`AuditClosedError` if a close stopped it).
        """
        marker = self._flush_marker()
        if marker is None:
            return
        stopped = self._stopped
        concurrent.futures.wait(
            (marker.future, stopped), timeout, concurrent.futures.FIRST_COMPLETED
        )
        self._flush_outcome(marker, stopped, timeout)

    async def aflush(self, timeout: float | None = None) -> None:
        marker = self._flush_marker()
        if marker is None:
            return
        stopped = self._stopped
        # Never cancel the wrappers: cancelling one would cancel ``stopped``.
        await asyncio.wait(
            (asyncio.wrap_future(marker.future), asyncio.wrap_future(stopped)),
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        self._flush_outcome(marker, stopped, timeout)

    def _flush_outcome(
        self,
        marker: _FlushMarker,
        stopped: concurrent.futures.Future[None],
        timeout: float | None,
    ) -> None:
        if marker.future.done():
            return
        if not stopped.done():
            raise AuditTimeoutError(self._flush_timeout_message(timeout))
        if self._closed:
            raise AuditClosedError("the audit service was closed while this flush waited")
        raise AuditWriterError(
            f"the audit writer stopped before it reached this flush ({self._crash}); "
            f"{len(self._queue)} queued entries are kept and written when it restarts "
            "(at the next call or flush)"
        )

    def _flush_timeout_message(self, timeout: float | None) -> str:
        return (
            f"audit flush did not complete within {timeout}s "
            f"({len(self._queue) + self._inflight} pending; last error: {self._last_error})"
        )

    def _flush_marker(self) -> _FlushMarker | None:
        if self._closed:
            raise AuditClosedError("this audit service is closed; create a new AuditService")
        if not self._running:
            if not self._queue:
                return None
            self.start()
        marker = _FlushMarker()
        self._flush_requests += 1
        self._queue.append(marker)
        self._wake()
        return marker

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
        pending = sum(1 for e in list(self._queue) if type(e) is tuple) + self._inflight
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
                        await self._store.close()  # always: aiosqlite's thread blocks exit
                except Exception:
                    logger.debug("closing the audit store", exc_info=True)

    async def _run(self) -> None:
        next_retention = time.monotonic()
        while True:
            try:
                await self._sleep()
                await self._drain(everything=self._stopping)
            except Exception as exc:
                # The last resort: _drain contains its own failures, so this is
                # a bug. Log it (once an interval), pause so a fault that
                # repeats cannot spin, and go on: queued entries stay queued.
                self._log_once("finops_audit writer loop failed; it goes on", exc)
                await asyncio.sleep(min(self._interval, 0.05))
            if self._stopping and not self._queue:
                return
            if self._retention is not None and time.monotonic() >= next_retention:
                next_retention = time.monotonic() + _RETENTION_INTERVAL
                try:
                    async with gate.held():
                        report = await self._retention(self._store)
                    logger.info("finops_audit retention: %s", report)
                except Exception as exc:
                    logger.warning("finops_audit retention purge failed: %r", exc)

    async def _sleep(self) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        self._wake_sent = False
        if not self._queue:
            # Nothing queued, so no flush is pending: clear a count that racing
            # threads may have left too high (it would keep the writer awake).
            self._flush_requests = 0
        # Re-check after re-arming: a producer that saw the old flag did not wake us.
        if (
            self._stopping
            or len(self._queue) >= self._batch
            or self._flush_requests > 0
            or self._has_marker()
        ):
            self._waiter = None
            return
        handle = loop.call_later(self._interval, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    def _has_marker(self) -> bool:
        q = self._queue
        return bool(q) and type(q[-1]) is _FlushMarker

    async def _drain(self, everything: bool = True) -> None:
        """Write what is queued, in batches.

        ``everything=False`` (the steady state) writes only what was queued
        when it began and leaves later arrivals to the next window: a writer
        that looped until the queue was empty would, at a moderate rate, chase
        every few new entries with a tiny batch and never sleep, and per-batch
        costs (thread hops, commits) would dominate. A full batch or a flush
        request still wakes the writer at once.
        """
        if self._gap is not None:
            await self._write_gap()
        q = self._queue
        batch = self._batch
        popleft = q.popleft
        budget = len(q)
        while q and (everything or budget > 0):
            entries: list[Entry] = []
            marker: _FlushMarker | None = None
            while q and len(entries) < batch:
                budget -= 1
                item = popleft()
                if type(item) is tuple:
                    entries.append(item)
                else:
                    marker = item  # type: ignore[assignment]
                    break  # commit what came before it, then release its waiter
            self._inflight = len(entries)
            if not self._room.is_set():
                self._room.set()
            if entries:
                started = time.perf_counter()
                self._write_started = time.monotonic()
                try:
                    await self._write_entries(entries)
                finally:
                    self._write_started = None
                if self._adaptive:
                    self._adapt(len(entries), time.perf_counter() - started)
            self._inflight = 0
            if marker is not None:
                self._flush_requests = max(0, self._flush_requests - 1)
                if self._gap is not None:
                    await self._write_gap()  # a flush covers the drops made before it
                if not marker.future.done():
                    marker.future.set_result(None)

    async def _write_entries(self, entries: list[Entry]) -> None:
        """Format and write one batch; nothing in it can stop the writer.

        Formatting is contained per entry (:mod:`finops_audit._salvage`);
        anything else that escapes ``_write`` (a bug) costs this batch alone:
        its entries are counted lost with a gap row, and the writer goes on.
        Retrying them could repeat the failure forever.
        """
        try:
            formatted = format_rows(self._formatter, entries)
            if formatted.sanitized or formatted.lost:
                self._note_unformattable(formatted.sanitized, formatted.lost, formatted.reasons)
            if formatted.rows:
                await self._write(formatted.rows)
        except Exception as exc:
            self._lose(len(entries), f"the writer failed on them ({type(exc).__name__})")
            self._log_once("finops_audit could not write a batch of audit entries", exc)
        except asyncio.CancelledError:
            raise  # the batch may have committed: _main drains what is still queued
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt... from a hook: the thread ends, but
            # the batch it held is counted, never silently gone.
            self._lose(len(entries), f"the writer stopped on them ({type(exc).__name__})")
            raise

    def _note_unformattable(self, sanitized: int, lost: int, reasons: list[str]) -> None:
        if lost:
            self._lose(lost, f"they could not be formatted ({', '.join(sorted(set(reasons)))})")
        if sanitized:
            self._sanitized += sanitized
            now = time.monotonic()
            if now - self._last_sanitize_warning >= _WARN_INTERVAL:
                self._last_sanitize_warning = now
                logger.warning(
                    "finops_audit stored %d audit entries in a safe form after %s while "
                    "formatting them (%d so far; see the $audit_sanitized key)",
                    sanitized,
                    ", ".join(sorted(set(reasons))),
                    self._sanitized,
                )

    def _lose(self, count: int, reason: str) -> None:
        """Accepted entries that will never be written: counted and marked by a gap row."""
        with self._lock:
            self._lost += count
            self._mark_gap(count, reason)
        logger.error("finops_audit lost %d audit entries because %s", count, reason)

    def _log_once(self, what: str, exc: BaseException) -> None:
        """Log an unexpected failure with its traceback, at most once an interval."""
        now = time.monotonic()
        if now - self._last_crash_log < _WARN_INTERVAL:
            return
        self._last_crash_log = now
        logger.error("%s: %r", what, exc, exc_info=exc)

    def _adapt(self, rows: int, seconds: float) -> None:
        if self._last_error is not None or seconds <= 0:
            return
        rate = rows / seconds
        self._rate = rate if self._rate == 0.0 else 0.7 * self._rate + 0.3 * rate
        limit = int(self._rate * self._interval) + self._batch
        self._limit = max(self._batch, min(self._max, limit))

    async def _write_gap(self) -> None:
        with self._lock:
            gap, self._gap = self._gap, None
        if gap is None:
            return
        count, first_ns, last_ns, reason = gap
        fmt = self._formatter
        first, last = fmt.timestamp(first_ns), fmt.timestamp(last_ns)
        params = {
            "dropped": count,
            "first_dropped_at": first,
            "last_dropped_at": last,
            "reason": reason,
        }
        message = (
            f"AuditGap: {count} audit entries were dropped between {first} and {last} "
            f"because {reason}"
        )
        entry: Entry = (
            GAP_TOOL_NAME,
            first_ns,
            last_ns - first_ns,
            safe_dumps(params),
            "FAILURE",
            message,
            None,
        )
        await self._write(fmt.rows([entry]), count_written=False)

    async def _write(self, rows: list[Row], *, count_written: bool = True) -> None:
        delay = 0.01
        sanitized = False
        while True:
            try:
                async with gate.held():
                    await self._store.write_batch(rows)
            except Exception as exc:
                self._record_error(exc)
                if _is_data_error(exc):
                    # Retrying cannot help a row the database refuses (e.g. a
                    # lone surrogate): clean the text once, then row by row.
                    if not sanitized:
                        rows = [_sanitize(row) for row in rows]
                        sanitized = True
                        continue
                    await self._write_one_by_one(rows, count_written)
                    return
                now = time.monotonic()
                if self._stopping and now >= self._give_up_at:
                    # Counted, not logged per batch: close() reports the total once.
                    self._lost += len(rows)
                    return
                pause = delay if not self._stopping else min(delay, self._give_up_at - now)
                await self._backoff(max(pause, 0.001))
                delay = min(delay * 2, 1.0)
                continue
            if count_written:
                self._written += len(rows)
            if self._hooks is not None:
                self._hooks.committed()
            if self._last_error is not None:
                logger.warning(
                    "finops_audit is writing to %s again after: %s",
                    self._store.describe(),
                    self._last_error,
                )
                self._last_error = None
                self._unopenable = False
            return

    async def _backoff(self, seconds: float) -> None:
        """Sleep before a retry; close() and flush() cut it short (through _wake)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    async def _write_one_by_one(self, rows: list[Row], count_written: bool) -> None:
        for row in rows:
            try:
                async with gate.held():
                    await self._store.write_batch([row])
            except Exception as exc:
                if not _is_data_error(exc):
                    await self._write([row], count_written=count_written)
                    continue
                self._lost += 1
                logger.error("finops_audit could not store an audit entry of %r: %r", row[1], exc)
            else:
                if count_written:
                    self._written += 1

    def _record_error(self, exc: BaseException) -> None:
        self._failed_writes += 1
        self._limit = self._max  # buffer through the fault
        message = f"{type(exc).__name__}: {exc}"
        self._unopenable = _cannot_open(exc)
        if message != self._last_error:
            logger.warning(
                "finops_audit cannot write to %s (%s); entries are kept and retried",
                self._store.describe(),
                message,
            )
        self._last_error = message


async def _gated(coro: Coroutine[Any, Any, T]) -> T:
    """A store operation run on the writer's loop, kept apart from ``os.fork()``."""
    async with gate.held():
        return await coro


def _cannot_open(exc: BaseException) -> bool:
    """The file cannot be opened at all (a folder, a missing or unwritable folder,
    a read-only mount): waiting through a shutdown cannot help."""
    if not isinstance(exc, AuditStorageError):
        return False
    cause = exc.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return "unable to open" in str(cause)
    return isinstance(cause, OSError)


def _is_data_error(exc: BaseException) -> bool:
    """A row the database refuses, as opposed to a database that is unavailable."""
    return isinstance(
        exc,
        (
            UnicodeError,
            ValueError,
            TypeError,
            OverflowError,
            sqlite3.InterfaceError,
            sqlite3.ProgrammingError,
            sqlite3.DataError,
        ),
    ) and not isinstance(exc, AuditStorageError)


def _sanitize(row: Row) -> Row:
    return tuple(
        v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v
        for v in row
    )


# ---------------------------------------------------------------------- process hooks

_all_writers: weakref.WeakSet[AuditWriter] = weakref.WeakSet()
_running: set[AuditWriter] = set()


def _track(writer: AuditWriter) -> None:
    _all_writers.add(writer)


def _close_all_at_exit() -> None:
    """Drain every running writer before the interpreter joins threads, then let
    forwarders deliver what they can (each within its forward_timeout)."""
    for writer in list(_running):
        try:
            writer.close()
        except Exception as exc:
            logger.error("finops_audit could not drain at exit: %s", exc)
    close_forwarders()


def flush_all(timeout: float) -> None:
    """Flush every running writer of this process, all within ``timeout`` seconds.

    A writer whose file cannot be opened is not waited for: nothing it holds
    can be written, and the signal that asked for the flush must not wait on it.
    """
    deadline = time.monotonic() + timeout
    markers = []
    for writer in list(_running):
        if writer._running and not writer._closed and not writer._unopenable:
            marker = _FlushMarker()
            writer._flush_requests += 1
            writer._queue.append(marker)
            writer._wake()
            markers.append(marker)
    for marker in markers:
        try:
            marker.future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            logger.error("finops_audit could not flush within %.1fs", timeout)
            return


def report_unwritten(signum: int) -> None:
    """Last words before a signal ends the process: one line per writer that
    still holds entries (they die with it), with their count."""
    for writer in list(_running):
        if writer._pid != os.getpid():
            continue
        pending = writer.stats().pending
        if pending:
            logger.error(
                "finops_audit: %d audit entries could not be written to %s before signal %d "
                "ended the process: %s",
                pending,
                writer._store.describe(),
                signum,
                writer._last_error or "the flush did not finish in time",
            )


_signals.set_last_words(report_unwritten)


def _after_fork_in_child() -> None:
    _running.clear()
    for writer in list(_all_writers):
        writer._after_fork()


_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    # Runs before non-daemon threads (aiosqlite's) are joined, when starting
    # threads is still allowed on every supported Python.
    _register(_close_all_at_exit)
else:  # pragma: no cover - every CPython 3.10-3.13 has it
    import atexit

    atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
