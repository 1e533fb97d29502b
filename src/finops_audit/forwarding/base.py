"""What a forwarding sink receives from a replica's buffer, and what it must do.

The replica's SQLite file is its durable buffer: the writer commits entries
there exactly as without forwarding, and a forwarder thread reads committed
rows after a persisted cursor and hands them, oldest first, to a sink (the
central PostgreSQL store, an OTLP collector). The cursor advances only after
``send`` returned, so a crash or a failed send repeats a batch: every sink
must therefore be idempotent on ``event_id`` (duplicate-free), and a batch is
all-or-nothing for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from .._chain import CURRENT_SCHEME
from ..exceptions import AuditStorageError
from ..storage.base import CALLER_COLUMNS

__all__ = ["BUFFER_COLUMNS", "BufferedRow", "ForwardSink", "ReplicaConflictError", "ReplicaInfo"]


class BufferedRow(NamedTuple):
    """One committed row of a replica's buffer, exactly as stored there."""

    seq: int  # the row's id in the buffer: its place in the replica's hash chain
    event_id: str  # 32 lowercase hex digits, unique across the fleet
    timestamp: str  # ISO-8601 UTC text, fixed width (``format_timestamp``)
    tool_name: str
    parameters: str  # JSON text, byte-exact as the hash chain covers it
    status: str
    error_message: str | None
    execution_time_ms: float | None
    row_hash: str | None  # None when the chain is off or for pre-chain rows
    user: str | None
    client_name: str | None
    client_version: str | None
    session_id: str | None
    request_id: str | None
    auth_client_id: str | None
    trace_id: str | None
    span_id: str | None
    labels: str | None  # JSON object text


#: The buffer's columns in :class:`BufferedRow` order (``seq`` is ``id`` there).
BUFFER_COLUMNS = (
    "id",
    "event_id",
    "timestamp",
    "tool_name",
    "parameters",
    "status",
    "error_message",
    "execution_time_ms",
    "row_hash",
    *CALLER_COLUMNS,
)


@dataclass(frozen=True)
class ReplicaInfo:
    """Who is sending: one buffer file is one replica (one hash chain).

    ``replica_id`` is ``AUDIT_REPLICA_ID`` or, by default, the host name plus a
    random suffix kept in the buffer, so it survives restarts. ``buffer_id`` is
    random per buffer file: a central store refuses a second buffer under a
    replica id it already knows. ``legacy_through`` is the last buffer id
    written before the chain existed (NULL hashes accepted up to it).
    ``scheme`` is the key scheme the buffer's rows are hashed under
    (:mod:`finops_audit._chain`): 1 for buffers made before scheme 2.
    """

    replica_id: str
    buffer_id: str
    legacy_through: int
    scheme: int = CURRENT_SCHEME


class ReplicaConflictError(AuditStorageError):
    """The destination already knows this replica id from another buffer file.

    Happens when a replica's buffer was lost and recreated under a fixed
    ``AUDIT_REPLICA_ID``: the forwarder then sends under ``<id>~<buffer>`` so
    both chains stay verifiable, and logs it once.
    """


@runtime_checkable
class ForwardSink(Protocol):
    """A destination for a replica's committed rows. Runs in the forwarder thread."""

    #: Cursor key in the buffer (one cursor per sink), e.g. ``"postgres"``, ``"otlp"``.
    name: str

    def describe(self) -> str:
        """Where rows go, for messages and stats: never a password."""

    def send(self, replica: ReplicaInfo, rows: Sequence[BufferedRow], prev_hash: str) -> None:
        """Deliver ``rows`` (consecutive in the buffer, oldest first) or raise.

        All-or-nothing and idempotent on ``event_id``: a batch may be sent
        again after a crash or a timeout. ``prev_hash`` is the chain hash
        before ``rows[0]`` (``GENESIS`` for the first row of a trail).
        """

    def close(self) -> None:
        """Release connections. Safe to call twice."""
