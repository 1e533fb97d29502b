"""Parse human durations such as ``90d``, ``15m``, ``1h30m`` (CLI and analytics)."""

from __future__ import annotations

import re
from datetime import timedelta

from .exceptions import AuditConfigError

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(text: str | int | float | timedelta, *, name: str = "duration") -> timedelta:
    """``"90d"`` → 90 days; numbers are seconds. Raises :class:`AuditConfigError` if unclear."""
    if isinstance(text, timedelta):
        value = text
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        value = timedelta(seconds=text)
    elif isinstance(text, str):
        cleaned = text.strip().lower().replace(" ", "")
        pos = 0
        seconds = 0.0
        for match in _PART.finditer(cleaned):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not cleaned or pos != len(cleaned):
            raise AuditConfigError(
                f"{name}={text!r} is not a duration; use a number and a unit, "
                "e.g. 30s, 15m, 1h, 90d, 2w (or 1h30m)"
            )
        value = timedelta(seconds=seconds)
    else:
        raise AuditConfigError(f"{name} must be a duration like '90d', not {text!r}")
    if value <= timedelta(0):
        raise AuditConfigError(f"{name}={text!r} must be positive")
    return value


def format_duration(value: timedelta) -> str:
    """``timedelta(days=1)`` → ``"1 day"``; ``1h30m`` → ``"1 hour 30 minutes"``.

    For sentences a person reads ("older than 1 day"), where ``str(timedelta)``
    would say ``1 day, 0:00:00``.
    """
    seconds = value.total_seconds()
    if seconds <= 0:
        return "0 seconds"
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count:,.0f} {unit}{'' if count == 1 else 's'}")
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    if text != "0" or not parts:
        parts.append(f"{text} second{'' if text == '1' else 's'}")
    return " ".join(parts)
