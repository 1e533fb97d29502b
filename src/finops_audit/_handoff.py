"""The hand-off and the admission policy: a bounded deque, block, drop or raise.

The caller's whole cost is here, so the fast path is two attribute reads, a
length check and ``deque.append`` (thread-safe under the GIL, no event loop
needed in the calling thread). The writer is woken only when a batch is full,
or on the first entry into an empty queue (an idle writer has no timer).

Admission (``queue_size`` is the hard bound, what can be held in memory):

* ``drop`` and ``raise`` refuse an entry only when ``queue_size`` is full;
* ``block`` absorbs a burst that fits in the queue at once. It paces callers
  only once the writer has been behind for longer than
  ``max_unwritten_seconds``, and then holds the queue to that many seconds of
  the writer's measured throughput: a SIGKILL loses the entries accepted
  within about that window, never more than ``queue_size``. During a
  database fault, or a write stuck on another process's lock, the whole
  ``queue_size`` buffers instead; ``block_timeout`` decides when a blocked
  caller's entry is dropped (counted, and marked by a gap row).

A refused durable entry (:class:`DurableMarker`) is settled as failed at
once, so its caller does not wait for a commit that will never come.
"""

from __future__ import annotations

import asyncio
import os
import time

from ._writer_state import WriterState
from ._writer_types import DurableMarker, Entry
from .exceptions import AuditQueueFullError

__all__ = ["HandoffMixin", "Item", "pace_limit"]

#: What a caller hands over: a plain entry, or a durable one with its waiter.
Item = Entry | DurableMarker


class HandoffMixin(WriterState):
    """``submit`` and friends: what runs in the caller's thread."""

    def submit(self, entry: Item) -> None:
        """Hand one entry over; the caller's whole cost. Never raises, except
        :class:`AuditQueueFullError` under the ``raise`` policy."""
        q = self._queue
        if self._running and len(q) < self._limit:
            q.append(entry)
            if (self._idle or len(q) >= self._batch) and not self._wake_sent:
                self._wake()
            return
        self._submit_slow(entry)

    def try_submit(self, entry: Item) -> bool:
        """Like :meth:`submit`, but returns ``False`` instead of blocking for room.

        Async callers use it and then ``await`` :meth:`asubmit_wait`, so
        backpressure never blocks their event loop.
        """
        q = self._queue
        if self._running and len(q) < self._limit:
            q.append(entry)
            if (self._idle or len(q) >= self._batch) and not self._wake_sent:
                self._wake()
            return True
        if self._policy == "block" and self._running and not self._closed:
            return False
        self._submit_slow(entry)
        return True

    async def asubmit_wait(self, entry: Item) -> None:
        """Wait (without blocking the loop) for room, up to ``block_timeout``, then submit."""
        deadline = time.monotonic() + self._settings.block_timeout
        delay = 0.0005
        q = self._queue
        try:
            while len(q) >= self._limit:
                verdict = self._room_verdict(deadline)
                if verdict == "drop":
                    self._refuse(entry, "the queue stayed full for block_timeout")
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
                self._refuse(entry, "the service is closed")
            raise
        self._admit(entry)

    def submit_durable(self, marker: DurableMarker) -> None:
        """:meth:`submit` for a durable entry, and wake the writer at once.

        The flush request is counted before the append, so the writer's
        re-check before it sleeps sees it (a lost wake costs one interval).
        """
        self._flush_requests += 1
        self.submit(marker)
        self._wake_for_durable()

    def try_submit_durable(self, marker: DurableMarker) -> bool:
        """:meth:`try_submit` for a durable entry; wakes the writer once it is queued.

        ``False``: wait for room with :meth:`asubmit_wait`, then :meth:`_wake_for_durable`.
        """
        self._flush_requests += 1
        if self.try_submit(marker):
            self._wake_for_durable()
            return True
        return False

    def _wake_for_durable(self) -> None:
        """Wake the writer, unless it is gathering a group this arrival does not complete.

        While the writer waits for the rest of a group (``_wakeup._gather_delay``)
        each wake would cost a thread switch against the busy callers (and the
        GIL): only the arrival that completes the group wakes it; a group that
        stays smaller is committed when its short gathering timer fires.
        """
        if not self._wake_sent and self._flush_requests >= self._gather_target:
            self._wake()

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

    def _admit(self, entry: Item) -> None:
        q = self._queue
        q.append(entry)
        if (self._idle or len(q) >= self._batch) and not self._wake_sent:
            self._wake()

    def _refuse(self, entry: Item, reason: str) -> None:
        """Drop one entry (counted, gap row); a durable caller learns it at once."""
        self._drop(1, reason)
        if type(entry) is DurableMarker:
            entry.fail(f"was dropped: {reason}")

    def _submit_slow(self, entry: Item) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if not self._running:
            if self._closed:
                self._refuse(entry, "the service is closed")
                return
            try:
                self.start()
            except Exception as exc:
                self._refuse(entry, f"the writer could not start: {exc}")
                return
            if len(self._queue) < self._limit:
                self.submit(entry)
                return
        if self._policy == "drop":
            self._refuse(entry, "the queue is full (policy drop)")
            return
        if self._policy == "raise":
            self._refuse(entry, "the queue is full (policy raise)")
            raise AuditQueueFullError(
                f"audit queue is full ({self._max} entries); the database is not keeping up"
            )
        deadline = time.monotonic() + self._settings.block_timeout
        q = self._queue
        while len(q) >= self._limit:
            verdict = self._room_verdict(deadline)
            if verdict == "drop":
                self._refuse(entry, "the queue stayed full for block_timeout")
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

    def _adapt(self, rows: int, seconds: float) -> None:
        """After each batch: measure the writer's throughput, and pace only a long overload.

        The throughput is measured per batch and smoothed. The writer is
        *behind* while more than a batch is left queued after a batch; callers
        are paced (see :func:`pace_limit`) only once it has been behind for
        longer than ``max_unwritten_seconds``, so a burst that fits in the
        queue and is written within that window is absorbed at full speed.
        """
        if self._last_error is not None or seconds <= 0:
            return
        rate = rows / seconds
        self._rate = rate if self._rate == 0.0 else 0.7 * self._rate + 0.3 * rate
        queued = len(self._queue)
        if queued <= self._batch:
            self._behind_since = None
            behind = 0.0
        else:
            now = time.monotonic()
            if self._behind_since is None:
                self._behind_since = now
            behind = now - self._behind_since
        self._limit = pace_limit(behind, self._rate, self._window, self._batch, self._max)


def pace_limit(behind: float, rate: float, window: float, batch: int, most: int) -> int:
    """How many entries the queue may hold before a blocked caller waits.

    ``behind``: seconds the writer has been behind; ``rate``: its measured
    rows a second. Within the window: the whole queue (``most``). Past it:
    ``window`` seconds of writing plus one batch, at least a batch, at most
    the queue, which bounds what a SIGKILL loses in a sustained overload.
    """
    if behind < window:
        return most
    return max(batch, min(most, int(rate * window) + batch))
