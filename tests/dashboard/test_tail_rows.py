"""The live tail's rows: events written from the stored text equal the general path's.

The poller embeds a row's stored ``parameters`` in its event when the text is
one JSON object, and otherwise takes the export dict (opened or marked when it
holds encrypted values). These tests compare both on a real trail, including
rows another writer could have left (not an object, not JSON, a line break, a
long integer), and check that encrypted values read as ``/api/logs`` shows them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from finops_audit import AuditService
from finops_audit.dashboard._filters import Filters
from finops_audit.dashboard._reader import matches, rows_after
from finops_audit.dashboard._rows import frame, tail_page
from finops_audit.storage.base import LogQuery

from .conftest import record

EVERYTHING = LogQuery(limit=500)

#: Stored ``parameters`` texts other writers may leave: (text, what a reader decodes).
ODD_TEXTS: list[tuple[str, Any]] = [
    ("[1, 2]", {"$value": [1, 2]}),
    ("not json {", {"$unparsed": "not json {"}),
    ('{"a": 1,\n "b": "x"}', {"a": 1, "b": "x"}),
    ('{"n": 12345678901234567890123}', {"n": 12345678901234567890123}),
    ("", {}),
    ('{"text": "line\\nbreak", "ü": "東京"}', {"text": "line\nbreak", "ü": "東京"}),
]


def _trail(db_path: Path, **settings: Any) -> None:
    svc = AuditService(db_path=db_path, handle_signals=False, **settings)
    try:
        record(
            svc,
            [
                ("get_costs", {"region": "eu-west-1", "n": 3}, False, {"user": "alice"}),
                ("get_costs", {"region": "us-east-1"}, True, {"client_name": "desk"}),
            ]
            * 4,
        )
    finally:
        svc.close()


def _events(frames: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for encoded in frames:
        head, _, data = encoded.partition(b"\r\ndata: ")
        assert head.startswith(b"id: ")
        assert head.endswith(b"\r\nevent: entry")
        assert data.endswith(b"\r\n\r\n")
        # One data line: a raw line break would cut the event for the browser.
        assert b"\r" not in data[:-4]
        assert b"\n" not in data[:-4]
        out.append((int(head[4:].split(b"\r\n")[0]), json.loads(data[:-4])))
    return out


def _read(svc: AuditService) -> tuple[list[dict[str, Any]], list[bytes], list[dict[str, Any]]]:
    async def both() -> tuple[list[dict[str, Any]], list[bytes], list[dict[str, Any]]]:
        page = await tail_page(svc, EVERYTHING, 0)
        assert page is not None  # a local trail has the tuple read
        return page[0], page[1], await rows_after(svc, EVERYTHING, 0)

    return asyncio.run(both())


def test_events_equal_the_general_path_on_every_kind_of_stored_row(db_path: Path) -> None:
    _trail(db_path)
    with sqlite3.connect(db_path) as conn:  # rows as another writer could have left them
        for i, (text, _) in enumerate(ODD_TEXTS, start=1):
            conn.execute("UPDATE audit_logs SET parameters = ? WHERE id = ?", (text, i))
    conn.close()
    with AuditService(db_path=db_path, read_only=True, handle_signals=False) as svc:
        rows, frames, general = _read(svc)
        logs = {e.id: e for e in svc.get_logs(limit=100)}
    assert len(rows) == len(frames) == len(general) == 8
    events = _events(frames)
    for (event_id, event), row, reference in zip(events, rows, general, strict=True):
        assert event_id == reference["id"] == row["id"]
        assert event == json.loads(frame(reference)[len(b"id: ") :].partition(b"data: ")[2])
        assert list(event) == list(reference)  # the same keys in the same order
        assert event["parameters"] == logs[event_id].parameters
    for i, (_, decoded) in enumerate(ODD_TEXTS):
        assert events[i][1]["parameters"] == decoded


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(param="eu-west-1"), 4),
        (Filters(param="EU-WEST"), 4),
        (Filters(param="3"), 4),
        (Filters(param="nowhere"), 0),
        (Filters(user="alice"), 4),
        (Filters(client="desk"), 4),
    ],
)
def test_the_streams_filters_read_the_fast_rows_as_the_store_does(
    db_path: Path, filters: Filters, expected: int
) -> None:
    _trail(db_path)
    with AuditService(db_path=db_path, read_only=True, handle_signals=False) as svc:
        rows, _, general = _read(svc)
    fast = [row["id"] for row in rows if matches(row, filters, None)]
    slow = [row["id"] for row in general if matches(row, filters, None)]
    assert fast == slow
    assert len(fast) == expected


def test_encrypted_values_are_opened_with_the_keyring_and_marked_without(db_path: Path) -> None:
    pytest.importorskip("cryptography")
    from ..encryption._crypto import RING_OLD

    _trail(db_path, encryption_keys=RING_OLD)
    with sqlite3.connect(db_path) as conn:
        stored = [text for (text,) in conn.execute("SELECT parameters FROM audit_logs")]
    conn.close()
    assert all("eu-west-1" not in text and "us-east-1" not in text for text in stored)
    with AuditService(
        db_path=db_path, read_only=True, handle_signals=False, encryption_keys=RING_OLD
    ) as svc:
        _, frames, general = _read(svc)
        logs = {e.id: e for e in svc.get_logs(limit=100)}
    events = _events(frames)
    assert [e["parameters"] for _, e in events] == [r["parameters"] for r in general]
    assert events[0][1]["parameters"] == {"region": "eu-west-1", "n": 3}
    for event_id, event in events:
        assert event["parameters"] == logs[event_id].parameters
        assert event["error_message"] == logs[event_id].error_message
    assert events[1][1]["error_message"].startswith("ValueError: bad region us-east-1")

    with AuditService(db_path=db_path, read_only=True, handle_signals=False) as keyless:
        _, frames, _ = _read(keyless)
        logs = {e.id: e for e in keyless.get_logs(limit=100)}
    for event_id, event in _events(frames):
        assert "eu-west-1" not in json.dumps(event)
        assert "us-east-1" not in json.dumps(event)
        assert event["parameters"] == logs[event_id].parameters
        assert event["error_message"] == logs[event_id].error_message
