"""The store interface: what the writer and the service need from a database.

The decorators never see a store; the writer hands it batches of finished rows
and the service asks it queries. :class:`AuditReader` is the query side, which
a central store (PostgreSQL for a fleet) implements too; :class:`AuditStore`
adds what the writer needs and is the embedded SQLite file's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._anchors import Anchor
from .._chain import Chainer
from ..analytics import ErrorGroup, TimeBucket, ToolStats
from ..maintenance import BackupReport, PurgeReport, VerifyReport
from ..models import AuditLogEntry, AuditStatus

__all__ = ["CALLER_COLUMNS", "AuditReader", "AuditStore", "LogQuery", "Row"]

#: One row as the writer stores it: (timestamp ISO text, tool_name, parameters
#: JSON text, status, error_message, execution_time_ms, *CALLER_COLUMNS).
Row = tuple[Any, ...]

#: The caller columns, in row order (labels is JSON text).
CALLER_COLUMNS = (
    "user",
    "client_name",
    "client_version",
    "session_id",
    "request_id",
    "auth_client_id",
    "trace_id",
    "span_id",
    "labels",
)


@dataclass(frozen=True)
class LogQuery:
    """A validated ``get_logs`` request (see ``AuditService.get_logs``)."""

    tool_name: str | None = None
    status: AuditStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0
    #: Match rows whose parameters contain this value (as text), or its pseudonym.
    parameter_value: str | None = None
    pseudonym: str | None = None
    #: Exact-match filters on caller columns, e.g. {"user": "alice"}.
    caller: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class AuditReader(Protocol):
    """What queries, analytics and maintenance need: the embedded trail or a central one."""

    async def query(self, query: LogQuery) -> list[AuditLogEntry]:
        """Entries matching ``query``, newest first."""

    async def count(self, query: LogQuery) -> int:
        """How many entries match ``query`` (limit and offset ignored)."""

    async def page_after(self, query: LogQuery, after_id: int) -> list[AuditLogEntry]:
        """Up to ``query.limit`` matching entries with ``id > after_id``, in id order (keyset)."""

    async def rows_after(self, query: LogQuery, after_id: int) -> list[dict[str, Any]]:
        """Like :meth:`page_after`, as JSON-ready dicts (no models): the export path."""

    async def tool_stats(self, query: LogQuery) -> list[ToolStats]:
        """Per-tool counts, failures and latency percentiles within the query's window."""

    async def slowest(self, query: LogQuery) -> list[AuditLogEntry]:
        """The ``query.limit`` slowest calls within the window, slowest first."""

    async def error_groups(self, query: LogQuery) -> list[ErrorGroup]:
        """Failures grouped by tool and error message, most recently seen first."""

    async def time_buckets(self, query: LogQuery, seconds: int) -> list[TimeBucket]:
        """Calls and failures per ``seconds``-long bucket, oldest first."""

    async def verify(
        self, chainer: Chainer, anchors: Sequence[Anchor] = (), anchor_source: str = ""
    ) -> VerifyReport:
        """Walk the hash chain; report the first row where it breaks (or an anchor fails)."""

    async def purge(self, cutoff: datetime, chainer: Chainer) -> PurgeReport:
        """Delete the oldest rows that started before ``cutoff``, leaving a checkpoint."""

    async def backup(self, dest: Path) -> BackupReport:
        """Write a consistent copy of the trail to ``dest`` (mode 0600) while writers run."""

    async def close(self) -> None:
        """Release connections. Safe to call twice."""

    def describe(self) -> str:
        """Where the data lives, for messages (e.g. the file path; never a password)."""


@runtime_checkable
class AuditStore(AuditReader, Protocol):
    """A database the writer fills. All methods run on the writer's event loop."""

    async def open(self) -> None:
        """Connect, create or upgrade the schema. Safe to call again after a failure."""

    async def write_batch(self, rows: Sequence[Row]) -> None:
        """Persist ``rows`` in one transaction: all of them or, on error, none."""
