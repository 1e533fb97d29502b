"""What passes between the decorators, the writer and its users.

Kept apart from the writer's machinery so that readers of the trail (the
dashboard's gap filter, the service's stats) and the forwarders can name these
types without importing the writer, and so that no runtime import cycle runs
through the forwarding package (``ForwardStats`` is imported for typing only).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._mcp_context import Caller
    from .forwarding._forwarder import ForwardStats

__all__ = [
    "GAP_TOOL_NAME",
    "AuditStats",
    "DurableMarker",
    "Entry",
    "FlushMarker",
    "WriterHooks",
    "settle",
]

#: What a decorator hands over: (tool_name, start wall-clock ns, duration ns,
#: parameters as JSON bytes, status value, error message or None, caller or None).
Entry = tuple[str, int, int, bytes, str, "str | None", "Caller | None"]

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
    fault, ``None`` once a write succeeds again. ``durable_timeouts`` counts
    calls in durable mode (``AUDIT_DURABILITY=commit``) that returned, or
    raised :class:`~finops_audit.AuditUnavailableError`, before their entry was
    committed: the entry was dropped (also in ``dropped``) or is still queued.
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
    durable_timeouts: int = 0


class FlushMarker:
    """Queued behind entries: the writer commits what came before it, then
    resolves ``future``. FIFO order makes that "everything accepted before"."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()


class DurableMarker:
    """Queued right behind one durable entry. Unlike a :class:`FlushMarker` it
    does not end the batch: every durable caller waiting at that moment shares
    the batch's one transaction (group commit), and all are resolved after it
    commits.

    Why not a ``concurrent.futures.Future``: a group of 64 callers paid one
    condition variable, one done-callback and one ``call_soon_threadsafe`` each
    (with ``asyncio.wrap_future`` and ``asyncio.wait`` on top), about as much
    as the commit they waited for. Here a sync caller waits on a plain locked
    :class:`threading.Lock` (the writer releases it: one C call), and an async
    caller awaits an ``asyncio`` future of its own loop, which the writer
    settles with one ``call_soon_threadsafe`` per loop per batch
    (:func:`settle`). ``error`` is ``None`` once committed, else why not.
    """

    __slots__ = ("entry", "error", "future", "lock", "loop", "settled")

    def __init__(self, entry: Entry, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.entry = entry
        self.error: str | None = None
        self.settled = False  # sync markers: released once, under ``_settling``
        self.loop = loop
        if loop is None:
            self.lock: threading.Lock | None = threading.Lock()
            self.lock.acquire()
            self.future: asyncio.Future[bool] | None = None
        else:
            self.lock = None
            self.future = loop.create_future()

    def wait(self, timeout: float) -> bool:
        """Sync callers: wait up to ``timeout`` seconds; ``True`` once settled."""
        assert self.lock is not None
        return self.lock.acquire(timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX))

    def fail(self, why: str) -> None:
        """The entry will not be committed (dropped, lost): its caller learns it now.

        Callable from any thread; a marker already settled stays as it was.
        """
        settle([self], f"the audit entry {why}")


#: Makes a sync marker's "settled?" check and its release one step.
_settling = threading.Lock()


def _new_settling_lock() -> None:
    """In a forked child: the thread that held the lock at the fork is gone."""
    global _settling
    _settling = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_settling_lock)


def settle(markers: list[DurableMarker], error: str | None) -> None:
    """Resolve ``markers`` (committed if ``error`` is ``None``), from any thread.

    Sync waiters are released at once; async ones with one
    ``call_soon_threadsafe`` per event loop, whatever their number.
    """
    loops: dict[asyncio.AbstractEventLoop, list[DurableMarker]] | None = None
    with _settling:  # the writer's release and a close's strand may race
        for marker in markers:
            loop = marker.loop
            if loop is None:
                lock = marker.lock
                assert lock is not None
                if not marker.settled:
                    marker.settled = True
                    marker.error = error
                    lock.release()
                continue
            if loops is None:
                loops = {}
            loops.setdefault(loop, []).append(marker)
    if loops is None:
        return
    for loop, group in loops.items():
        try:
            loop.call_soon_threadsafe(_settle_on_loop, group, error)
        except RuntimeError:  # the caller's loop has closed: nobody is waiting
            pass


def _settle_on_loop(markers: list[DurableMarker], error: str | None) -> None:
    """On the callers' loop: wake every waiter of one batch (``True``: settled)."""
    for marker in markers:
        future = marker.future
        assert future is not None
        if not future.done():  # a cancelled or timed-out caller is gone
            marker.error = error
            future.set_result(True)
