"""A replica's buffer rows as central PostgreSQL values, and back as the chain covers them.

Apart from the sink because both sides need it: :class:`~.postgres.PostgresSink`
converts rows with :func:`central_rows`, and the central store's verify
(``storage/_pg_maintenance.py``) undoes the conversion with :func:`chain_fields`
and recomputes the ``jsonb`` input with :func:`jsonb_input`; neither side needs
the other's connection code, and this module needs no database driver.

Data PostgreSQL refuses must not jam a replica's forwarding, and the chain
must stay checkable centrally. The hash chain covers, per row, the timestamp
text, tool name, parameters text, status, error, duration, the caller columns
and the labels text (:data:`CHAIN_COLUMNS`), so those are stored verbatim
where PostgreSQL can hold them and reversibly escaped where it cannot:

* A text value holding NUL (``text`` refuses it) or a lone surrogate (not
  UTF-8), or starting with the marker U+FDD0, is stored as U+FDD0 followed by
  its JSON string literal in ASCII (:func:`stored_text`). :func:`restore_text`
  inverts it exactly, and :func:`chain_fields` gives a verifier the row as the
  chain covers it. Only hand-edited or pre-chain rows hold such values;
  readers see them escaped.
* ``parameters`` (``jsonb``) is the queryable form: JSON that ``jsonb`` cannot
  hold (``\\u0000``, lone surrogate escapes, NaN, invalid text, nesting beyond
  1,024) is cleaned (U+FFFD) or kept as ``{"$unparsed": text}``; the exact
  text is in ``parameters_text`` (chained rows only). ``labels`` likewise,
  with the exact text in ``labels_text``, because ``jsonb`` loses key order.
* An event id that is not 32 hex digits gets a UUID derived from the replica
  and seq (stable, so a re-send still deduplicates); an unparseable timestamp
  is stored as the epoch. Both make that row fail central verification.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import orjson

from ..storage._pg_schema import PG_CALLER_COLUMNS
from ..storage.sqlite import format_timestamp

__all__ = [
    "CHAIN_COLUMNS",
    "central_rows",
    "chain_fields",
    "jsonb_input",
    "restore_text",
    "stored_text",
]

#: What the hash chain covers, as central columns, in chain order (see :func:`chain_fields`).
CHAIN_COLUMNS = (
    "timestamp",
    "tool_name",
    "parameters_text",
    "status",
    "error_message",
    "execution_time_ms",
    *PG_CALLER_COLUMNS,
    "labels_text",
)

_MARK = "\ufdd0"  # a Unicode noncharacter: valid UTF-8, never in real text
_SURROGATE = re.compile("[\ud800-\udfff]")
_EVENT_ID = re.compile("[0-9a-fA-F]{32}")
_EPOCH = "1970-01-01T00:00:00.000000+00:00"
_EVENT_NAMESPACE = uuid.UUID("6a0d1700-0000-4000-8000-66696e6f7073")


# ----------------------------------------------------------------- chain-exact text
def _escape(value: str) -> str:
    return _MARK + json.dumps(value)  # ASCII: NUL and surrogates become \\uXXXX


def stored_text(value: Any) -> str | None:
    """A text column's stored form: itself, unless PostgreSQL cannot hold it."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)  # SQLite's loose typing
    if "\x00" in text or text.startswith(_MARK):
        return _escape(text)
    if not text.isascii() and _SURROGATE.search(text) is not None:
        return _escape(text)
    return text


def restore_text(value: str | None) -> str | None:
    """The exact text a replica had, from a stored text column (inverse of :func:`stored_text`)."""
    if value is None or not value.startswith(_MARK):
        return value
    restored = json.loads(value[1:])
    return restored if isinstance(restored, str) else value


def chain_fields(values: Sequence[Any]) -> tuple[Any, ...]:
    """The row as the hash chain covers it, from central values in :data:`CHAIN_COLUMNS` order.

    A verifier computes ``chainer.row_hash(seq, chain_fields(values), prev_hash)``.
    """
    ts, *rest = values
    stamp = format_timestamp(ts) if isinstance(ts, datetime) else ts
    out: list[Any] = [stamp]
    for index, value in enumerate(rest):
        out.append(value if index == 4 else restore_text(value))  # 4: execution_time_ms
    return tuple(out)


# ----------------------------------------------------------------- jsonb
def _clean(value: Any) -> Any:
    """``value`` with every string jsonb could not hold made safe (NUL, surrogates)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _finite(text: str) -> float | str:
    number = float(text)
    return number if math.isfinite(number) else text  # 1e400: kept as its text


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _jsonb_slow(text: str, *, want_object: bool) -> str:
    """jsonb input for text that is not plain JSON jsonb accepts: cleaned, or wrapped.

    Raw control characters inside strings are accepted here (``strict=False``)
    and re-escaped on output, so only text that is not JSON at all is wrapped.
    """
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_reject_constant, strict=False)
        if want_object and not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return json.dumps(_clean(value), ensure_ascii=False)
    except (ValueError, RecursionError):
        return json.dumps({"$unparsed": _clean(text)}, ensure_ascii=False)


def jsonb_input(raw: Any, *, want_object: bool = False) -> str:
    """What the sink stores in a ``jsonb`` column for a JSON text: the text itself
    whenever ``jsonb`` takes it, else a cleaned or ``{"$unparsed": text}`` form."""
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    try:
        value = orjson.loads(text)  # stricter than jsonb, except for \u0000
    except orjson.JSONDecodeError:
        return _jsonb_slow(text, want_object=want_object)
    if "\\u0000" in text or (want_object and not isinstance(value, dict)):
        return _jsonb_slow(text, want_object=want_object)
    return text


# ----------------------------------------------------------------- rows
def _timestamp(text: Any) -> tuple[str, int]:
    """(stored timestamp text, month key year*12+month-1) for a buffer timestamp."""
    try:
        if text.endswith("+00:00"):  # the buffer's own format: stored as it is
            when = datetime.fromisoformat(text)
            return text, when.year * 12 + when.month - 1
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
        when = when.astimezone(timezone.utc)
        return format_timestamp(when), when.year * 12 + when.month - 1
    except (AttributeError, TypeError, ValueError, OverflowError):
        return _EPOCH, 1970 * 12


def _event_id(event_id: Any, replica_id: str, seq: int) -> str:
    if isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id):
        return event_id
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{replica_id}\x1f{seq}\x1f{event_id}"))


def _row_texts(row: Sequence[Any]) -> tuple[Any, ...]:
    """Text columns the chain covers, as stored: (tool, params, status, error, hash, *callers,
    labels). One probe over the whole row; each value is looked at only if it finds something.
    """
    texts = (*row[3:7], *row[8:18])
    try:
        probe = "".join(filter(None, texts))  # TypeError: a BLOB in a text column
    except TypeError:
        return tuple(stored_text(v) for v in texts)
    if "\x00" in probe or _MARK in probe:
        return tuple(stored_text(v) for v in texts)
    if not probe.isascii() and _SURROGATE.search(probe) is not None:
        return tuple(stored_text(v) for v in texts)
    return texts


def central_rows(
    replica_id: str, rows: Iterable[Sequence[Any]]
) -> tuple[list[tuple[Any, ...]], set[int]]:
    """Buffer rows as ``CENTRAL_COLUMNS`` values (all text but seq and duration: the
    sink's staging table's types), and the months they fall in (year*12 + month-1)."""
    out: list[tuple[Any, ...]] = []
    months: set[int] = set()
    jsonb = jsonb_input
    for row in rows:
        seq, event_id, ts, _, params, _, _, elapsed, row_hash = row[:9]
        texts = _row_texts(row)
        stamp, month = _timestamp(ts)
        months.add(month)
        if elapsed.__class__ is not float and elapsed is not None:
            try:
                elapsed = float(elapsed)
            except (TypeError, ValueError):
                elapsed = None
        labels = row[17]
        out.append(
            (
                _event_id(event_id, replica_id, seq),
                replica_id,
                int(seq),
                stamp,
                texts[0],
                jsonb(params),
                texts[1] if row_hash is not None else None,
                texts[2],
                texts[3],
                elapsed,
                *texts[4:13],  # row_hash, user .. span_id
                None if labels is None else jsonb(labels, want_object=True),
                texts[13] if row_hash is not None else None,
            )
        )
    return out, months
