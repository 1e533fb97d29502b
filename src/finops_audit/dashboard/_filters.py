"""The dashboard's URL filters: parsed and checked once, so a bad value is a 400, never a 500.

A view is shared by sharing its URL, so every filter lives in the query string:
``tool``, ``status``, ``user``, ``client``, ``session``, ``since``, ``until``
and ``param`` (a parameter value). The library's own names (``tool_name``,
``client_name``, ``session_id``, ``parameter_value``) are accepted too. Values
are bound as SQL parameters by the stores; here they are only bounded in size
and stripped of what no database column holds (NUL and other control characters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .._durations import parse_duration
from ..exceptions import AuditConfigError
from ..models import AuditStatus

__all__ = ["MAX_VALUE_CHARS", "FilterError", "Filters", "int_param", "parse_filters"]

#: Longest filter value accepted; longer ones are refused with a 400.
MAX_VALUE_CHARS = 512

# URL name -> the names it may also be given as.
_TEXT = {
    "tool": ("tool", "tool_name"),
    "user": ("user",),
    "client": ("client", "client_name"),
    "session": ("session", "session_id"),
    "param": ("param", "parameter_value"),
}


class FilterError(AuditConfigError):
    """A query-string value the dashboard cannot use; its message is the 400's text."""


@dataclass(frozen=True)
class Filters:
    """The filters of one request, ready for the service's keyword arguments."""

    tool: str | None = None
    status: AuditStatus | None = None
    user: str | None = None
    client: str | None = None
    session: str | None = None
    param: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def window(self) -> dict[str, Any]:
        """What the analytics calls take: tool and time range."""
        return {"tool_name": self.tool, "since": self.since, "until": self.until}

    def logs(self) -> dict[str, Any]:
        """What ``get_logs`` takes: every filter."""
        return {
            **self.window(),
            "status": self.status,
            "user": self.user,
            "client_name": self.client,
            "session_id": self.session,
            "parameter_value": self.param,
        }

    @property
    def narrows_rows(self) -> bool:
        """True when a filter beyond tool and time applies (analytics ignore those)."""
        return any(v is not None for v in (self.status, self.user, self.client, self.session))


def _text(params: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = params.get(name)
        if value is None or value == "":
            continue
        if len(value) > MAX_VALUE_CHARS:
            raise FilterError(f"{name} is {len(value)} characters; at most {MAX_VALUE_CHARS}")
        if any(ord(c) < 32 for c in value):
            raise FilterError(f"{name} contains a control character")
        return value
    return None


def _when(params: Mapping[str, str], name: str, now: datetime) -> datetime | None:
    """ISO-8601 (naive = UTC) or an age such as ``24h`` (now minus that)."""
    value = _text(params, (name,))
    if value is None:
        return None
    text = value.strip()
    if text and text[-1].lower() in "smhdw" and text[:-1].replace(".", "", 1).isdigit():
        try:
            return now - parse_duration(text, name=name)
        except (AuditConfigError, OverflowError):
            raise FilterError(f"{name}={value!r} is not a usable age (e.g. 15m, 24h, 7d)") from None
    # A "+00:00" offset pasted into a URL unescaped arrives as " 00:00".
    text = re.sub(r"(\d) (\d{2}:?\d{2})$", r"\1+\2", text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"{name}={value!r} is not an ISO-8601 time (2026-11-28T04:00:00Z) or an age (24h)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def parse_filters(params: Mapping[str, str]) -> Filters:
    """The filters in ``params`` (a request's query string); raises :class:`FilterError`."""
    now = datetime.now(timezone.utc)
    text = {key: _text(params, names) for key, names in _TEXT.items()}
    status_text = _text(params, ("status",))
    status = None
    if status_text is not None:
        try:
            status = AuditStatus(status_text.upper())
        except ValueError:
            raise FilterError(f"status={status_text!r} is not SUCCESS or FAILURE") from None
    since = _when(params, "since", now)
    until = _when(params, "until", now)
    if since is not None and until is not None and since > until:
        raise FilterError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    return Filters(status=status, since=since, until=until, **text)


def int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``; raises :class:`FilterError`."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if len(value) > 20 or not value.strip().lstrip("-").isdigit():
        raise FilterError(f"{name}={value[:40]!r} is not an integer")
    number = int(value)
    if not low <= number <= high:
        raise FilterError(f"{name}={number} is outside {low}..{high}")
    return number


def bucket_param(params: Mapping[str, str], default: str) -> timedelta:
    """``bucket`` (``1m``, ``1h``, seconds) between one second and one year."""
    value = _text(params, ("bucket",)) or default
    try:
        bucket = parse_duration(value, name="bucket")
    except (AuditConfigError, OverflowError):
        raise FilterError(f"bucket={value!r} is not a duration such as 1m, 1h, 1d") from None
    if not timedelta(seconds=1) <= bucket <= timedelta(days=366):
        raise FilterError(f"bucket={value!r} must be between 1s and 366d")
    return bucket
