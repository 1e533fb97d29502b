"""One timer per event loop (and timeout) for the durable async waiters' ``block_timeout``.

Why: a ``call_later`` per durable call (a timer handle pushed on the loop's
heap and cancelled a moment later) cost about a tenth of the durable
throughput of 64 async callers. The waiters of one loop with one timeout
have their deadlines in the order they were added, so they form a FIFO: one
timer, armed at the oldest pending deadline, times out what is overdue and
re-arms itself at the next. A waiter that returns prunes the settled ones
from the front (settlement is in about FIFO order, a group commit at a time),
so the queue holds about the callers still waiting, and nothing at all once
they are done (no timer either).

Everything here runs on the loop's own thread.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

__all__ = ["Deadlines", "deadlines_for"]

_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Deadlines]] = (
    weakref.WeakKeyDictionary()
)


class Deadlines:
    """The pending waiters of one loop with one timeout, and their one timer."""

    __slots__ = ("_handle", "_pending", "_timeout")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._pending: deque[tuple[float, asyncio.Future[bool]]] = deque()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[bool]) -> None:
        """``future`` gets ``False`` if still pending ``timeout`` seconds from now."""
        pending = self._pending
        while pending and pending[0][1].done():
            pending.popleft()
        deadline = loop.time() + self._timeout
        pending.append((deadline, future))
        if self._handle is None:
            self._handle = loop.call_at(deadline, self._fire, loop)

    def prune(self) -> None:
        """After a waiter returns: drop settled ones; no timer once none is left."""
        pending = self._pending
        while pending and pending[0][1].done():
            pending.popleft()
        if not pending and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        pending = self._pending
        now = loop.time()
        while pending:
            deadline, future = pending[0]
            if not future.done():
                if deadline > now:
                    self._handle = loop.call_at(deadline, self._fire, loop)
                    return
                future.set_result(False)
            pending.popleft()


def deadlines_for(loop: asyncio.AbstractEventLoop, timeout: float) -> Deadlines | None:
    """The shared deadlines of ``loop`` for ``timeout``; ``None`` for a loop that
    cannot be weakly referenced (the caller then arms a timer of its own)."""
    try:
        by_timeout = _registry.get(loop)
        if by_timeout is None:
            by_timeout = _registry.setdefault(loop, {})
    except TypeError:
        return None
    found = by_timeout.get(timeout)
    if found is None:
        found = by_timeout.setdefault(timeout, Deadlines(timeout))
    return found
