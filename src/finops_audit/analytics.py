"""Typed answers to the design note's four questions, computed in SQL.

Compliance ("who called what, when": :meth:`AuditService.get_logs`), error
analysis (:class:`ErrorGroup`), performance (:class:`ToolStats` percentiles,
slowest calls) and usage (:class:`ToolStats` counts, :class:`TimeBucket`).
The store computes them in the database; rows are never loaded into Python to
be counted. Gap markers (dropped entries) are not calls and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

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

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ToolStats:
        """From a store's ``(tool, calls, failures, avg, p50, p95, p99, max)`` row."""
        tool, n, failures, avg, p50, p95, p99, top = row
        failures = failures or 0
        return cls(
            tool_name=tool,
            calls=n,
            failures=failures,
            failure_rate=failures / n if n else 0.0,
            avg_ms=avg,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            max_ms=top,
        )


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
