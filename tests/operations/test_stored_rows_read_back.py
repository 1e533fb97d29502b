"""Rows read back as entries: every column in its field, and rows other code wrote tolerated.

A trail outlives the code that wrote it, and a reader must not fail on a row
an older version (or a careless hand) left: a ``Z`` time, labels that are not
JSON or not an object, label values that are numbers. Each field of an entry
is checked against the raw column a plain ``sqlite3`` reads, and the caller
filters and the pseudonym search are checked against near misses.
"""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from finops_audit import AuditLogEntry, AuditService, AuditStatus, audit_context, audit_tool_sync

KEY = "rows-test-key-0123456789abcdef-012345"
#: The caller columns ``get_logs`` filters on (exact match).
FILTERS = ("user", "client_name", "session_id", "request_id")


def columns(db_path: Path, row_id: int) -> dict[str, Any]:
    with closing(sqlite3.connect(db_path)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM audit_logs WHERE id = ?", (row_id,)).fetchone()
    return dict(row)


def set_column(db_path: Path, row_id: int, column: str, value: object) -> None:
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"UPDATE audit_logs SET {column} = ? WHERE id = ?", (value, row_id))
        conn.commit()


def one_call(svc: AuditService, **context: str) -> AuditLogEntry:
    @audit_tool_sync(service=svc)
    def charge(account: str, cents: int) -> None:
        raise PermissionError("card declined")

    with audit_context(**context), pytest.raises(PermissionError):
        charge("acct-7", cents=1250)
    svc.flush()
    [entry] = svc.get_logs(tool_name="charge")
    return entry


def test_every_column_lands_in_its_field(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        entry = one_call(svc, user="alice", tenant="acme")
    raw = columns(db_path, entry.id)
    assert entry.timestamp == datetime.fromisoformat(raw["timestamp"])
    assert entry.timestamp.tzinfo is not None
    assert entry.tool_name == raw["tool_name"] == "charge"
    assert entry.parameters == {"account": "acct-7", "cents": 1250}
    assert entry.status is AuditStatus.FAILURE
    assert entry.error_message == raw["error_message"] == "PermissionError: card declined"
    assert entry.execution_time_ms == raw["execution_time_ms"]
    assert entry.user == raw["user"] == "alice"
    assert entry.labels == {"tenant": "acme"}
    assert entry.event_id == raw["event_id"]
    assert entry.event_id is not None
    assert len(entry.event_id) == 32
    assert entry.replica_id is None


def test_each_caller_column_is_read_into_its_own_field(db_path: Path) -> None:
    """Distinct values per column: a shifted column would land in a neighbour's field."""
    with AuditService(db_path) as svc:
        entry = one_call(svc)
    values = {
        "user": "u-1",
        "client_name": "claude-desktop",
        "client_version": "1.2.3",
        "session_id": "s-4",
        "request_id": "r-5",
        "auth_client_id": "ac-6",
        "trace_id": "t" * 32,
        "span_id": "p" * 16,
    }
    for column, value in values.items():
        set_column(db_path, entry.id, column, value)
    with AuditService(db_path) as svc:
        [back] = svc.get_logs()
    assert {c: getattr(back, c) for c in values} == values


def test_a_z_time_an_older_version_wrote_reads_as_utc(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        entry = one_call(svc)
    set_column(db_path, entry.id, "timestamp", "2026-11-28T04:05:06.123456Z")
    with AuditService(db_path) as svc:
        [back] = svc.get_logs()
        [group] = svc.error_groups()
    expected = datetime(2026, 11, 28, 4, 5, 6, 123456, tzinfo=timezone.utc)
    assert back.timestamp == expected
    assert group.first_seen == group.last_seen == expected


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        (None, {}),
        ("", {}),
        (
            '{"tenant": "acme", "shard": 3, "beta": true}',
            {"tenant": "acme", "shard": "3", "beta": "True"},
        ),
        ('["not", "an", "object"]', {}),
        ('"just text"', {}),
        ("tenant=acme", {"$unparsed": "tenant=acme"}),
        ('{"tenant": "acme"', {"$unparsed": '{"tenant": "acme"'}),
    ],
    ids=["null", "empty", "numbers", "list", "string", "not-json", "cut-json"],
)
def test_labels_other_code_wrote_are_read_not_refused(
    db_path: Path, stored: str | None, read: dict[str, str]
) -> None:
    with AuditService(db_path) as svc:
        entry = one_call(svc, tenant="acme")
    set_column(db_path, entry.id, "labels", stored)
    with AuditService(db_path) as svc:
        [back] = svc.get_logs()
        assert back.labels == read
        [row] = _export_rows(svc)
    assert row["labels"] == read


def _export_rows(svc: AuditService) -> list[dict[str, Any]]:
    out = io.StringIO()
    svc.export(out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("column", FILTERS)
def test_a_caller_filter_matches_its_own_column_exactly(db_path: Path, column: str) -> None:
    with AuditService(db_path) as svc:
        first = one_call(svc)
        second = one_call_again(svc)
    set_column(db_path, first.id, column, "wanted")
    set_column(db_path, second.id, column, "wanted-not")  # a prefix search would find it
    for other in FILTERS:
        if other != column:
            set_column(db_path, second.id, other, "wanted")  # in another column
    with AuditService(db_path) as svc:
        got = svc.get_logs(**{column: "wanted"})  # type: ignore[arg-type]
    assert [e.id for e in got] == [first.id]


def one_call_again(svc: AuditService) -> AuditLogEntry:
    @audit_tool_sync(name="refund", service=svc)
    def refund(account: str) -> None:
        return None

    refund("acct-8")
    svc.flush()
    [entry] = svc.get_logs(tool_name="refund")
    return entry


def test_caller_filters_combine_with_the_other_filters(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        with audit_context(user="alice"):
            first = one_call(svc)
            one_call_again(svc)
        assert [e.id for e in svc.get_logs(user="alice", tool_name="charge")] == [first.id]
        assert [e.id for e in svc.get_logs(user="alice", status="FAILURE")] == [first.id]
        assert svc.get_logs(user="bob") == []
        assert len(svc.get_logs(user="alice")) == 2


def test_a_value_stored_only_as_its_pseudonym_is_found_by_its_plaintext(db_path: Path) -> None:
    """With a key, account ids are stored as pseudonyms; the search looks for both forms."""
    with AuditService(db_path, hmac_key=KEY) as svc:

        @audit_tool_sync(service=svc)
        def bill(account_id: str, note: str) -> None:
            return None

        bill("123456789012", note="monthly")
        bill("210987654321", note="ref 123456789012")  # the plaintext inside a value
        svc.flush()
        [pseudo, plain] = sorted(svc.get_logs(), key=lambda e: e.id)
        assert "123456789012" not in str(pseudo.parameters)
        found = svc.get_logs(parameter_value="123456789012")
        assert {e.id for e in found} == {pseudo.id, plain.id}
        assert [e.id for e in svc.get_logs(parameter_value="monthly")] == [pseudo.id]
    with closing(sqlite3.connect(db_path)) as conn:
        raw = [r[0] for r in conn.execute("SELECT parameters FROM audit_logs ORDER BY id")]
    assert "123456789012" not in raw[0]
