"""Typed answers to the design note's four questions, computed in SQL.

Compliance ("who called what, when": :meth:`AuditService.get_logs`), error
analysis (:class:`ErrorGroup`), performance (:class:`ToolStats` percentiles,
slowest calls) and usage (:class:`ToolStats` counts, :class:`TimeBucket`).
The store computes them in the database; rows are never loaded into Python to
be counted. Gap markers (dropped entries) are not calls and are left out.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

__all__ = ["ErrorGroup", "TimeBucket", "ToolStats"]


class ToolStats(BaseModel):
    """Calls, failures and latency of one tool over a time window.

    Percentiles use the nearest-rank method over ``execution_time_ms``.
    """

    model_config = ConfigDict(frozen=True)

    tool_name: str
    calls: int
    failures: int
    failure_rate: float
    avg_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


class ErrorGroup(BaseModel):
    """Failures of one tool that share an error message."""

    model_config = ConfigDict(frozen=True)

    tool_name: str
    error_message: str | None
    count: int
    first_seen: datetime
    last_seen: datetime


class TimeBucket(BaseModel):
    """Calls that started within ``[start, start + bucket)``."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    calls: int
    failures: int
