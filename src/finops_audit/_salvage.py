"""Formatting that one bad entry cannot break.

The writer formats a batch in one loop (:meth:`RowFormatter.rows`, the fast
path). Anything in an entry can make that raise: a lone surrogate in an
``audit_context`` label (orjson refuses it), a caller field of an odd type, a
bug in a redaction rule. Before this module such an exception escaped the
writer's loop, the writer thread died with other callers' entries in its
hands, and ``flush()`` waited for it forever.

:func:`format_rows` contains the failure to the entry that causes it:

1. The batch is formatted as usual; only if that raises is it formatted again
   entry by entry, so a failure costs nothing on the common path.
2. An entry that fails on its own is formatted once more in a *safe form*:
   every text field made total (``str`` subclasses read as plain text, lone
   surrogates escaped as ``\\udc80``) and a :data:`SANITIZED_KEY` marker put
   into its parameters naming the exception type. Redaction still runs on
   the safe form, so escaping never lets a secret through.
3. If the safe form fails too, a minimal row keeps the call's time, tool,
   status and duration, with parameters replaced by the marker alone (the
   parameters, error message and caller are not stored: that is what the
   marker says).
4. Only if even that fails is the entry lost; the writer counts it in
   ``stats().lost`` and writes a gap row.

The marker names only the exception's type, never its message: a message may
quote the very value that could not be redacted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ._encoding import safe_dumps

if TYPE_CHECKING:
    from ._encoding import RowFormatter
    from .storage.base import Row

__all__ = ["SANITIZED_KEY", "Formatted", "format_rows", "safe_text"]

#: Key added to the parameters of a row stored in a safe form.
SANITIZED_KEY = "$audit_sanitized"


@dataclass
class Formatted:
    """Rows ready to write, and what it took to get them."""

    rows: list[Row]
    #: Entries stored in a safe form (escaped or minimal), by exception type.
    sanitized: int = 0
    #: Entries that could not be stored at all.
    lost: int = 0
    #: Type names of the exceptions met, in order (for one log line).
    reasons: list[str] = field(default_factory=list)


def format_rows(formatter: RowFormatter, entries: list[Any]) -> Formatted:
    """Format ``entries``; a failure affects the failing entry alone. Never raises."""
    try:
        return Formatted(formatter.rows(entries))
    except Exception:  # handled entry by entry below
        pass
    out = Formatted([])
    for entry in entries:
        try:
            out.rows.extend(formatter.rows([entry]))
            continue
        except Exception as exc:
            reason = _type_name(exc)
        out.reasons.append(reason)
        row = _salvage(formatter, entry, reason)
        if row is None:
            out.lost += 1
        else:
            out.rows.append(row)
            out.sanitized += 1
    return out


def _salvage(formatter: RowFormatter, entry: Any, reason: str) -> Row | None:
    for make in (_escaped, _minimal):
        try:
            rows = formatter.rows([make(entry, reason)])
        except Exception:
            continue
        if len(rows) == 1:
            return rows[0]
    return None


def safe_text(value: object) -> str | None:
    """Storable text for anything: never raises, never holds a lone surrogate."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            text = str.__str__(value)  # a subclass's own __str__ is not consulted
        else:
            text = str(value)
            if not isinstance(text, str):  # pragma: no cover - str() returns str
                raise TypeError
    except Exception:
        return f"<unprintable {_type_name(value)}>"
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _type_name(obj: object) -> str:
    name = getattr(type(obj), "__qualname__", None)
    if type(name) is not str:  # pragma: no cover - a metaclass that fakes its name
        return "object"
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _marker(reason: str, what: str) -> str:
    return f"{reason} while formatting this entry; {what}"


def _escaped(entry: Any, reason: str) -> tuple[Any, ...]:
    tool, wall, elapsed, params, status, error, caller = entry
    try:
        value = orjson.loads(params)
    except Exception:
        value = {"$unparsed": safe_text(bytes(params).decode("utf-8", "backslashreplace"))}
    note = _marker(reason, "its text fields were stored escaped")
    if isinstance(value, dict):
        doc = {SANITIZED_KEY: note, **value}
    else:
        doc = {SANITIZED_KEY: note, "$value": value}
    return (
        safe_text(tool) or "<unknown>",
        _int(wall, time.time_ns()),
        _int(elapsed, 0),
        safe_dumps(doc),
        safe_text(status) or "FAILURE",
        safe_text(error),
        _caller(caller),
    )


def _minimal(entry: Any, reason: str) -> tuple[Any, ...]:
    try:
        tool, wall, elapsed, _, status, _, _ = entry
    except Exception:
        tool = wall = elapsed = status = None
    note = _marker(reason, "its parameters, error message and caller were not stored")
    return (
        safe_text(tool) or "<unknown>",
        _int(wall, time.time_ns()),
        _int(elapsed, 0),
        orjson.dumps({SANITIZED_KEY: note}),
        safe_text(status) or "FAILURE",
        None,
        None,
    )


def _int(value: object, default: int) -> int:
    return int(value) if type(value) is int else default


def _caller(caller: Any) -> tuple[Any, ...] | None:
    if caller is None:
        return None
    fields = [safe_text(v) for v in tuple(caller)[:8]]
    fields += [None] * (8 - len(fields))
    labels = caller[8] if len(caller) > 8 else None
    clean: dict[str, str] | None = None
    if isinstance(labels, dict) and labels:
        clean = {safe_text(k) or "": safe_text(v) or "" for k, v in list(labels.items())}
    return (*fields, clean)
