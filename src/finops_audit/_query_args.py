"""The arguments of the service's queries, checked once into a :class:`LogQuery`.

Why a module of its own: the service, the CLI's reading commands and the
dashboard all accept the same filters (tool, status, window, caller columns,
a parameter value), and a user must get the same answer and the same error
message whichever door they came in by. So the rules live here, once; a bad
argument raises :class:`~finops_audit.AuditConfigError` saying what to pass
instead, before any store is touched.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from ._durations import parse_duration
from .exceptions import AuditConfigError
from .models import AuditStatus
from .redaction import Redactor
from .storage.base import LogQuery

__all__ = [
    "MAX_LIMIT",
    "as_datetime",
    "bucket_seconds",
    "make_query",
    "with_caller",
    "with_value",
]

#: Largest ``limit`` one ``get_logs`` call may ask for; page with ``offset`` beyond it.
MAX_LIMIT = 100_000


def make_query(
    tool_name: str | None,
    status: AuditStatus | str | None,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int,
    offset: int,
) -> LogQuery:
    """Validate ``get_logs`` arguments; a bad one raises :class:`AuditConfigError`."""
    if tool_name is not None and not isinstance(tool_name, str):
        raise AuditConfigError(f"tool_name must be a string, not {tool_name!r}")
    parsed_status: AuditStatus | None = None
    if status is not None:
        try:
            parsed_status = AuditStatus(status.upper() if isinstance(status, str) else status)
        except ValueError:
            accepted = ", ".join(s.value for s in AuditStatus)
            raise AuditConfigError(
                f"status={status!r} is invalid; use one of: {accepted}"
            ) from None
    for name, number, low in (("limit", limit, 1), ("offset", offset, 0)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise AuditConfigError(f"{name} must be an integer, not {number!r}")
        if number < low:
            raise AuditConfigError(f"{name}={number} must be at least {low}")
    if limit > MAX_LIMIT:
        raise AuditConfigError(f"limit={limit} is more than {MAX_LIMIT}; page with offset")
    start = as_datetime("since", since)
    end = as_datetime("until", until)
    if start is not None and end is not None and start > end:
        raise AuditConfigError(f"since ({start.isoformat()}) is after until ({end.isoformat()})")
    return LogQuery(tool_name, parsed_status, start, end, limit, offset)


def with_value(
    query: LogQuery, parameter_value: str | None, redactor: Redactor, keyed: bool
) -> LogQuery:
    """``query`` narrowed to entries with a parameter value containing ``parameter_value``.

    With an HMAC key (``keyed``) the value's pseudonym is searched too, so a
    value stored only as its pseudonym is still found by its plaintext.
    """
    if parameter_value is None:
        return query
    if not isinstance(parameter_value, str) or not parameter_value:
        raise AuditConfigError(
            f"parameter_value must be a non-empty string, not {parameter_value!r}"
        )
    pseudonym = redactor.pseudonym(parameter_value) if keyed else None
    return replace(query, parameter_value=parameter_value, pseudonym=pseudonym)


def with_caller(
    query: LogQuery,
    user: str | None,
    client_name: str | None,
    session_id: str | None,
    request_id: str | int | None,
) -> LogQuery:
    """``query`` narrowed to exact matches on the caller columns that are given."""
    pairs = []
    for name, value in (
        ("user", user),
        ("client_name", client_name),
        ("session_id", session_id),
        ("request_id", request_id),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise AuditConfigError(f"{name} must be a string, not {value!r}")
        pairs.append((name, str(value)))
    return replace(query, caller=tuple(pairs)) if pairs else query


def bucket_seconds(bucket: str | int | timedelta) -> int:
    """The width of a ``calls_over_time`` bucket in whole seconds (at least one)."""
    seconds = int(parse_duration(bucket, name="bucket").total_seconds())
    if seconds < 1:
        raise AuditConfigError(f"bucket={bucket!r} must be at least one second")
    return seconds


def as_datetime(name: str, value: datetime | str | None) -> datetime | None:
    """An aware datetime from a datetime or ISO-8601 string; naive ones are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise AuditConfigError(
                f"{name}={value!r} is not an ISO-8601 date or time (e.g. 2026-11-28T04:00:00Z)"
            ) from None
    if not isinstance(value, datetime):
        raise AuditConfigError(f"{name} must be a datetime or an ISO-8601 string, not {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value
