"""The wake-up and flush protocol between callers' threads and the writer's loop.

The writer sleeps on a future of its own loop. Three kinds of sleep:

* **idle** (nothing queued, no gap row owed, and nothing arrived during one
  window after the last write): no timer at all, so an idle service uses no
  CPU, while a steady moderate rate keeps one timer wake a window and no
  caller ever pays a wake-up. The first entry into the empty queue wakes it, with
  one ``call_soon_threadsafe`` per idle-to-busy transition. The lost-wake
  race is closed by order: the writer publishes ``_idle`` *then* re-checks the
  queue; a producer appends *then* reads ``_idle``. Under the GIL one of the
  two sees the other. (A retention purge, if configured, is the only timer:
  one an hour.)
* **window** (something queued): the flush interval collects a batch, as a
  full batch, a flush or a durable waiter cut it short;
* **backoff** between retries of a failed write; ``close()`` and ``flush()``
  cut it short.

``flush()`` appends a :class:`FlushMarker` and waits for the writer to reach
it: FIFO order makes that "everything accepted before the call is committed".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from ._writer_state import WriterState
from ._writer_types import FlushMarker
from .exceptions import AuditClosedError, AuditTimeoutError, AuditWriterError

__all__ = ["WakeupMixin"]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class WakeupMixin(WriterState):
    """Waking the writer, its sleeps, and ``flush()``."""

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

    def _urgent(self) -> bool:
        """Write at once: stopping, a full batch, a flush or a durable waiter."""
        q = self._queue
        return (
            self._stopping
            or len(q) >= self._batch
            or self._flush_requests > 0
            or (bool(q) and type(q[-1]) is not tuple)
        )

    async def _sleep(self, wake_by: float | None = None) -> None:
        """Sleep until there is something to write (see the module docstring).

        ``wake_by`` (monotonic seconds) bounds an idle sleep: the next retention purge.
        """
        loop = asyncio.get_running_loop()
        gather_until: float | None = None
        while True:
            self._iterations += 1
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            self._wake_sent = False
            if not self._queue:
                # Nothing queued, so no flush is pending: clear a count that racing
                # threads may have left too high (it would keep the writer awake).
                self._flush_requests = 0
            # Re-check after re-arming: a producer that saw the old flag did not wake us.
            if self._urgent():
                delay = self._gather_delay()
                if delay > 0.0:
                    now = time.monotonic()
                    if gather_until is None:
                        gather_until = now + delay
                    if now < gather_until:
                        # Only the arrival that completes the group wakes us.
                        self._gather_target = self._last_group
                        if self._flush_requests < self._gather_target:
                            try:
                                await self._wait(waiter, gather_until - now)
                            finally:
                                self._gather_target = 0
                            continue  # count again
                        self._gather_target = 0
                self._waiter = None
                return
            if self._queue or self._gap is not None:
                await self._wait(waiter, self._interval)
                return
            if self._active:
                # The writer just wrote: at a steady moderate rate more entries
                # are on their way. One more window on the timer (no caller has
                # to wake us) before going idle; an idle service stops after it.
                self._active = False
                await self._wait(waiter, self._interval)
                if self._queue or self._gap is not None:
                    return
                continue
            self._idle = True
            if self._queue or self._gap is not None or self._urgent():
                self._idle = False  # an entry arrived before the flag was seen
                self._waiter = None
                continue
            timeout = None if wake_by is None else max(0.0, wake_by - time.monotonic())
            try:
                await self._wait(waiter, timeout)
            finally:
                self._idle = False
            if wake_by is not None and time.monotonic() >= wake_by:
                return
            # Woken by the first entry: go round to collect a window of them.

    def _gather_delay(self) -> float:
        """Group commit: how long to wait for the rest of the durable callers' group.

        Durable callers released by one commit come back together, but not at
        the same instant: committing the first to return would split the group
        into one tiny transaction and one large, each paying a whole fsync. So
        while fewer durable entries are queued than the last group had, wait
        for them, at most half the last commit's duration (2 ms at most). One
        caller at a time (a group of one) never waits.
        """
        if self._stopping or len(self._queue) >= self._batch:
            return 0.0
        if self._flush_requests >= self._last_group:
            return 0.0
        return min(self._last_commit * 0.5, 0.002)

    async def _wait(self, waiter: asyncio.Future[None], timeout: float | None) -> None:
        handle = None
        if timeout is not None:
            handle = asyncio.get_running_loop().call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None

    async def _backoff(self, seconds: float) -> None:
        """Sleep before a retry; close() and flush() cut it short (through _wake)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        await self._wait(waiter, seconds)

    # ------------------------------------------------------------------ flush

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

    def request_flush(self) -> FlushMarker:
        """Queue a flush marker and wake the writer; the caller waits on its future."""
        marker = FlushMarker()
        self._flush_requests += 1
        self._queue.append(marker)
        self._wake()
        return marker

    def _flush_outcome(
        self,
        marker: FlushMarker,
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

    def _flush_marker(self) -> FlushMarker | None:
        if self._closed:
            raise AuditClosedError("this audit service is closed; create a new AuditService")
        if not self._running:
            if not self._queue:
                return None
            self.start()
        return self.request_flush()
