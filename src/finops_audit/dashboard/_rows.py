"""The live tail's rows: each stored tuple written as its SSE event once, from its stored text.

At 1,000 calls a second the poller reads every new row. Turning each into a
dict with decoded ``parameters`` and encoding that again cost more than the
query; here a row whose stored ``parameters`` is a plain JSON object (every
row the writer makes without encryption) is checked by one parse and embedded
in the event as it is stored. A row with an encrypted value, or any text the
check refuses, takes the general path: the export dict, opened (or marked) as
every other reader sees it. Both give the same event, ``orjson.dumps`` of the
``row_to_dict`` shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from .._decrypting import open_row
from .._envelope import ERROR_PREFIX, OPENING, has_envelope
from .._fieldcrypt import FieldOpener
from ..service import AuditService
from ..storage.base import LogQuery
from ..storage.sqlite import _FIELDS, _labels, row_to_dict

__all__ = ["frame", "opened", "tail_page"]


def frame(row: dict[str, Any]) -> bytes:
    """One entry as an SSE event: ``id`` is the entry's id, so ``Last-Event-ID`` resumes."""
    try:
        data = orjson.dumps(row)
    except TypeError:  # an integer beyond 64 bits, which orjson refuses and json writes
        data = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
    return _EVENT % (row["id"], data)


_EVENT = b"id: %d\r\nevent: entry\r\ndata: %s\r\n\r\n"


def opened(opener: FieldOpener, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a ``row_to_dict`` dict) with encrypted values opened, or marked, if it has any."""
    error = row.get("error_message")
    sealed = isinstance(error, str) and error.startswith(ERROR_PREFIX)
    return open_row(opener, row) if sealed or has_envelope(row["parameters"]) else row


async def tail_page(
    service: AuditService, query: LogQuery, after_id: int
) -> tuple[list[dict[str, Any]], list[bytes]] | None:
    """Rows with ``id > after_id`` matching ``query`` and their events, or ``None`` when
    the store has no tuple read (the central one): the caller reads dicts instead."""

    async def ask(store: Any) -> list[Sequence[Any]] | None:
        read = getattr(store, "tuples_after", None)
        return None if read is None else list(await read(query, after_id))

    tuples = await service._aask(ask)
    if tuples is None:
        return None
    opener = service._opener
    rows: list[dict[str, Any]] = []
    frames: list[bytes] = []
    for raw in tuples:
        row, encoded = _encode(raw, opener)
        rows.append(row)
        frames.append(encoded)
    return rows, frames


def _encode(raw: Sequence[Any], opener: FieldOpener) -> tuple[dict[str, Any], bytes]:
    text, error = raw[3], raw[5]
    value: Any = None
    if (
        isinstance(text, str)
        and OPENING not in text
        and not (isinstance(error, str) and error.startswith(ERROR_PREFIX))
        # A raw line break (JSON whitespace) would end the SSE data line.
        and "\n" not in text
        and "\r" not in text
    ):
        try:
            value = orjson.loads(text)  # the check that ``text`` is one JSON object
        except orjson.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        row = opened(opener, row_to_dict(raw))
        return row, frame(row)
    row = dict(zip(_FIELDS, raw, strict=False))
    ts = row["timestamp"]
    if isinstance(ts, str) and ts.endswith("+00:00"):
        row["timestamp"] = ts[:-6] + "Z"
    row["labels"] = _labels(row["labels"])
    row["parameters"] = orjson.Fragment(text)  # embedded as stored
    encoded = _EVENT % (row["id"], orjson.dumps(row))
    # The text again: a stream's parameter filter decodes it (``_reader.matches``).
    row["parameters"] = text
    return row, encoded
