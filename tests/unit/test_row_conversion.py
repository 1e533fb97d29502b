"""One stored row, one entry: the conversion both stores share, on the rows each hands it.

The central store reads through the same functions as the embedded one, with a
replica id and timestamps that are already datetimes; a trail written before
event ids existed hands over rows of 16 columns. Each shape must give the same
entry, or the same export line, that the other store would.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from finops_audit import AuditStatus
from finops_audit.storage.sqlite import row_to_dict, row_to_entry

WHEN = datetime(2026, 11, 28, 4, 5, 6, 123456, tzinfo=timezone.utc)


def stored_row(ts: Any = "2026-11-28T04:05:06.123456+00:00") -> tuple[Any, ...]:
    """A row in the stores' column order (id, time, tool, ..., labels, event id)."""
    return (
        7,
        ts,
        "charge",
        '{"account":"acct-7"}',
        "FAILURE",
        "PermissionError: card declined",
        1.5,
        "alice",
        "claude-desktop",
        "1.2.3",
        "s-4",
        "r-5",
        "ac-6",
        "t" * 32,
        "p" * 16,
        '{"tenant":"acme"}',
        "e" * 32,
    )


def test_a_local_row_and_a_central_row_make_the_same_entry_but_the_replica() -> None:
    local = row_to_entry(stored_row())
    central = row_to_entry(stored_row(ts=WHEN), replica_id="replica-eu-1")
    assert local.replica_id is None
    assert central.replica_id == "replica-eu-1"
    assert central.model_copy(update={"replica_id": None}) == local
    assert local.timestamp == WHEN
    assert local.status is AuditStatus.FAILURE
    assert local.parameters == {"account": "acct-7"}
    assert local.labels == {"tenant": "acme"}
    assert local.event_id == "e" * 32


def test_a_row_from_before_event_ids_has_none() -> None:
    """16 columns: what a trail older than the event id column hands over."""
    entry = row_to_entry(stored_row()[:16])
    assert entry.event_id is None
    assert entry.labels == {"tenant": "acme"}
    line = row_to_dict(stored_row()[:16])
    assert "event_id" not in line
    assert line["labels"] == {"tenant": "acme"}
    assert line["timestamp"] == "2026-11-28T04:05:06.123456Z"


def test_an_export_line_keeps_every_column_under_its_name() -> None:
    line = row_to_dict(stored_row())
    assert line == {
        "id": 7,
        "timestamp": "2026-11-28T04:05:06.123456Z",
        "tool_name": "charge",
        "parameters": {"account": "acct-7"},
        "status": "FAILURE",
        "error_message": "PermissionError: card declined",
        "execution_time_ms": 1.5,
        "user": "alice",
        "client_name": "claude-desktop",
        "client_version": "1.2.3",
        "session_id": "s-4",
        "request_id": "r-5",
        "auth_client_id": "ac-6",
        "trace_id": "t" * 32,
        "span_id": "p" * 16,
        "labels": {"tenant": "acme"},
        "event_id": "e" * 32,
    }


def test_an_export_line_keeps_a_time_that_is_not_utc_text_as_stored() -> None:
    """Only the ``+00:00`` suffix becomes ``Z``; anything else is not rewritten."""
    assert row_to_dict(stored_row(ts="2026-11-28T04:05:06Z"))["timestamp"] == (
        "2026-11-28T04:05:06Z"
    )
    assert row_to_dict(stored_row(ts="2026-11-28T07:05:06+03:00"))["timestamp"] == (
        "2026-11-28T07:05:06+03:00"
    )
