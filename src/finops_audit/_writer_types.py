"""What passes between the decorators, the writer and its users.

Kept apart from the writer's machinery so that readers of the trail (the
dashboard's gap filter, the service's stats) and the forwarders can name these
types without importing the writer, and so that no runtime import cycle runs
through the forwarding package (``ForwardStats`` is imported for typing only).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .exceptions import AuditStorageError

if TYPE_CHECKING:
    from ._mcp_context import Caller
    from .forwarding._forwarder import ForwardStats

__all__ = ["GAP_TOOL_NAME", "AuditStats", "DurableMarker", "Entry", "FlushMarker", "WriterHooks"]

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
    commits."""

    __slots__ = ("entry", "future")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def fail(self, why: str) -> None:
        """The entry will not be committed (dropped, lost): its caller learns it now."""
        if not self.future.done():
            self.future.set_exception(AuditStorageError(f"the audit entry {why}"))
