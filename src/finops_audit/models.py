"""What a reader of the trail gets back: :class:`AuditStatus` and :class:`AuditLogEntry`.

These are the design note's public shapes. They are built only on the read
path; the write path moves plain tuples, because a pydantic model costs more
than the whole hand-off (see ``DESIGN.md``).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["AuditLogEntry", "AuditStatus"]


class AuditStatus(str, Enum):
    """Outcome of one tool call. A ``str`` enum, so ``"SUCCESS"`` compares equal."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"

    def __str__(self) -> str:
        return self.value


class AuditLogEntry(BaseModel):
    """One recorded tool invocation.

    ``timestamp`` is the timezone-aware UTC start of the call; ``parameters``
    holds every argument by parameter name (positional ones included) as it was
    when the call began; ``error_message`` reads like ``"ValueError: bad region"``
    and is ``None`` on success. The caller fields come from ``audit_context``
    and, inside an MCP tool, from the SDK's request (client name and version,
    request and session ids, authenticated client id); ``trace_id`` and
    ``span_id`` from the active OpenTelemetry span. Unknown values are ``None``.
    ``event_id`` (32 hex digits) identifies the entry across a fleet;
    ``replica_id`` names the replica that recorded it, when read from a
    central store (``AUDIT_DB_URL``), and is ``None`` in a local trail.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    timestamp: datetime
    tool_name: str
    parameters: dict[str, Any]
    status: AuditStatus
    error_message: str | None = None
    execution_time_ms: float | None = None
    user: str | None = None
    client_name: str | None = None
    client_version: str | None = None
    session_id: str | None = None
    request_id: str | None = None
    auth_client_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    event_id: str | None = None
    replica_id: str | None = None

    @field_validator("timestamp")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        # Rows written by the seed implementation are ISO strings with an
        # offset; anything naive is taken as UTC, which is what was meant.
        from datetime import timezone

        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
