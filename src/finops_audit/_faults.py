"""Fault bookkeeping: what went wrong, counted once, logged at most once an interval.

Entries are never silently gone: a refused entry is *dropped*, an accepted one
that can never be written is *lost*; both are counted for ``stats()`` and
marked by one gap row (``GAP_TOOL_NAME``) that the writer stores in the trail
itself, so a reader of the trail sees the hole and its size. Logging is
rate-limited: a storm of drops must not become a storm of log lines (the
OpenTelemetry SDK needed a filter for its own).
"""

from __future__ import annotations

import logging
import sqlite3
import time

from ._encoding import safe_dumps
from ._writer_state import WriterState
from ._writer_types import GAP_TOOL_NAME, Entry
from .exceptions import AuditStorageError
from .storage.base import Row

__all__ = ["WARN_INTERVAL", "FaultsMixin", "cannot_open", "is_data_error", "sanitize"]

logger = logging.getLogger("finops_audit")

#: Seconds between two warnings of the same kind.
WARN_INTERVAL = 10.0


class FaultsMixin(WriterState):
    """Counts, gap rows and rate-limited logs of one writer."""

    def _mark_gap(self, count: int, reason: str) -> None:
        """Add ``count`` missing entries to the next gap row (the caller holds the lock)."""
        wall = time.time_ns()
        gap = self._gap
        if gap is None:
            self._gap = [count, wall, wall, reason]
        else:
            gap[0] += count
            gap[2] = wall
            gap[3] = reason

    def _drop(self, count: int, reason: str) -> None:
        """Entries refused (queue full, service closed): counted and marked by a gap row."""
        with self._lock:
            self._dropped += count
            self._mark_gap(count, reason)
            now = time.monotonic()
            warn = now - self._last_drop_warning >= WARN_INTERVAL
            if warn:
                self._last_drop_warning = now
            total = self._dropped
        if self._idle:
            self._wake()  # an idle writer has no timer: the gap row must not wait for traffic
        if warn:
            logger.warning(
                "finops_audit dropped audit entries because %s (%d dropped so far)",
                reason,
                total,
            )

    def _lose(self, count: int, reason: str) -> None:
        """Accepted entries that will never be written: counted and marked by a gap row."""
        with self._lock:
            self._lost += count
            self._mark_gap(count, reason)
        logger.error("finops_audit lost %d audit entries because %s", count, reason)

    def _log_once(self, what: str, exc: BaseException) -> None:
        """Log an unexpected failure with its traceback, at most once an interval."""
        now = time.monotonic()
        if now - self._last_crash_log < WARN_INTERVAL:
            return
        self._last_crash_log = now
        logger.error("%s: %r", what, exc, exc_info=exc)

    def _note_unformattable(self, sanitized: int, lost: int, reasons: list[str]) -> None:
        if lost:
            self._lose(lost, f"they could not be formatted ({', '.join(sorted(set(reasons)))})")
        if sanitized:
            self._sanitized += sanitized
            now = time.monotonic()
            if now - self._last_sanitize_warning >= WARN_INTERVAL:
                self._last_sanitize_warning = now
                logger.warning(
                    "finops_audit stored %d audit entries in a safe form after %s while "
                    "formatting them (%d so far; see the $audit_sanitized key)",
                    sanitized,
                    ", ".join(sorted(set(reasons))),
                    self._sanitized,
                )

    def _record_error(self, exc: BaseException) -> None:
        """A write failed: count it, buffer through the fault, warn once per new message."""
        self._failed_writes += 1
        self._limit = self._max  # buffer through the fault
        message = f"{type(exc).__name__}: {exc}"
        self._unopenable = cannot_open(exc)
        if message != self._last_error:
            logger.warning(
                "finops_audit cannot write to %s (%s); entries are kept and retried",
                self._store.describe(),
                message,
            )
        self._last_error = message

    def _cleared(self) -> None:
        """A write succeeded: a recorded fault is over."""
        if self._last_error is not None:
            logger.warning(
                "finops_audit is writing to %s again after: %s",
                self._store.describe(),
                self._last_error,
            )
            self._last_error = None
            self._unopenable = False

    def _gap_entry(self) -> Entry | None:
        """Take the pending gap, as the entry of its gap row (``None`` if there is none)."""
        with self._lock:
            gap, self._gap = self._gap, None
        if gap is None:
            return None
        count, first_ns, last_ns, reason = gap
        fmt = self._formatter
        first, last = fmt.timestamp(first_ns), fmt.timestamp(last_ns)
        params = {
            "dropped": count,
            "first_dropped_at": first,
            "last_dropped_at": last,
            "reason": reason,
        }
        message = (
            f"AuditGap: {count} audit entries were dropped between {first} and {last} "
            f"because {reason}"
        )
        return (
            GAP_TOOL_NAME,
            first_ns,
            last_ns - first_ns,
            safe_dumps(params),
            "FAILURE",
            message,
            None,
        )


def cannot_open(exc: BaseException) -> bool:
    """The file cannot be opened at all (a folder, a missing or unwritable folder,
    a read-only mount): waiting through a shutdown cannot help."""
    if not isinstance(exc, AuditStorageError):
        return False
    cause = exc.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return "unable to open" in str(cause)
    return isinstance(cause, OSError)


def is_data_error(exc: BaseException) -> bool:
    """A row the database refuses, as opposed to a database that is unavailable."""
    return isinstance(
        exc,
        (
            UnicodeError,
            ValueError,
            TypeError,
            OverflowError,
            sqlite3.InterfaceError,
            sqlite3.ProgrammingError,
            sqlite3.DataError,
        ),
    ) and not isinstance(exc, AuditStorageError)


def sanitize(row: Row) -> Row:
    """The row with every text made encodable (lone surrogates escaped)."""
    return tuple(
        v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v
        for v in row
    )
