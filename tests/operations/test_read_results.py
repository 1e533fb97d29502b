"""What a reader gets back from the SQLite store, exactly, in any time zone.

The query, export, paging and analytics paths are driven in-process through
:class:`AuditService` on real files, and their results compared field by field:
the stored text of a time is UTC whatever the machine's zone (a timestamp
written or compared in local time passes every test on a UTC machine, so these
run under a half-hour zone), an export's timestamps end in ``Z`` and its labels
are an object, keyset pages keep their filter, an empty failure count is 0, a
failed anchor check names the anchor file, and maintenance waits for a busy
writer instead of failing.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from finops_audit import AuditService, audit_context, audit_tool_sync
from finops_audit.storage.sqlite import SQLiteAuditStore, format_timestamp

KEY = "reader-test-key-0123456789abcdef-0123"
ST_JOHNS = "America/St_Johns"  # UTC-3:30 or -2:30: no whole-hour slip hides


@pytest.fixture
def half_hour_zone() -> Iterator[None]:
    """This process's local time zone is St. John's for the test (restored after)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = ST_JOHNS
    time.tzset()
    try:
        assert time.localtime().tm_gmtoff % 3600 != 0
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def record(svc: AuditService, calls: int, **context: str) -> None:
    @audit_tool_sync(service=svc)
    def pay(to: str) -> str:
        if to.endswith("!"):
            raise ValueError(f"refused {to}")
        return to

    with audit_context(**context):
        for i in range(calls):
            try:
                pay(f"acct-{i}" + ("!" if i % 4 == 3 else ""))
            except ValueError:
                pass
    svc.flush()


# -- time: stored and compared as UTC text ----------------------------------------------


@pytest.mark.usefixtures("half_hour_zone")
def test_stored_time_text_is_utc_whatever_the_local_zone() -> None:
    instant = datetime(2026, 11, 28, 4, 5, 6, 7, tzinfo=timezone.utc)
    expected = "2026-11-28T04:05:06.000007+00:00"
    assert format_timestamp(instant) == expected
    assert format_timestamp(instant.astimezone(timezone(timedelta(hours=9)))) == expected
    assert format_timestamp(instant.astimezone()) == expected  # an aware local time
    assert format_timestamp(instant.replace(tzinfo=None)) == expected  # naive means UTC


def test_stored_time_text_sorts_as_time() -> None:
    """Fixed width, so text order is time order (the index serves time ranges)."""
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    steps = [timedelta(microseconds=1), timedelta(seconds=1), timedelta(days=400)]
    times = [base + k * s for s in steps for k in range(3)]
    texts = [format_timestamp(t) for t in times]
    assert len({len(t) for t in texts}) == 1
    assert sorted(texts) == [format_timestamp(t) for t in sorted(times)]


@pytest.mark.usefixtures("half_hour_zone")
def test_query_bounds_mean_the_same_instant_in_any_zone(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        record(svc, 6)
        trail = svc.get_logs(limit=100)
        pivot = trail[2].timestamp  # the fourth oldest of six
        newer = [e for e in trail if e.timestamp >= pivot]
        assert svc.get_logs(since=pivot, limit=100) == newer
        assert svc.get_logs(since=pivot.astimezone(), limit=100) == newer
        assert svc.get_logs(until=pivot, limit=100) == [e for e in trail if e.timestamp <= pivot]
        assert svc.count(since=pivot) == len(newer)
        assert len(newer) < len(trail)


@pytest.mark.usefixtures("half_hour_zone")
def test_purge_cuts_at_the_same_instant_in_any_zone(db_path: Path) -> None:
    """Rows 2 hours old go with ``older_than=1h``; rows from now stay (the zone is -3:30)."""
    with AuditService(db_path) as svc:
        record(svc, 4)
    old = format_timestamp(datetime.now(timezone.utc) - timedelta(hours=2))
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("UPDATE audit_logs SET timestamp = ? WHERE id <= 2", (old,))
        conn.commit()
    with AuditService(db_path) as svc:
        report = svc.purge("1h")
        assert report.rows_deleted == 2
        assert [e.parameters["to"] for e in svc.iter_logs()] == ["acct-2", "acct-3!"]


# -- export: the JSON an exported entry is ----------------------------------------------


def test_an_export_line_is_the_stored_row_with_utc_z_time_and_objects(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        record(svc, 2, user="alice", tenant="acme", region="eu-west-1")
        [first, _] = list(svc.iter_logs())
        out = io.StringIO()
        assert svc.export(out) == 2
    line = json.loads(out.getvalue().splitlines()[0])
    assert line["timestamp"] == first.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert line["labels"] == {"tenant": "acme", "region": "eu-west-1"}
    assert line["parameters"] == {"to": "acct-0"}
    assert line["user"] == "alice"
    assert line["id"] == first.id
    assert line["event_id"] == first.event_id
    assert line["status"] == "SUCCESS"


def test_an_export_of_rows_without_labels_has_empty_objects(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        record(svc, 1)
        out = io.StringIO()
        svc.export(out)
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["labels"] == {}
    assert line["timestamp"].endswith("Z")
    assert "+00:00" not in line["timestamp"]


# -- keyset pages keep their filter -----------------------------------------------------


def test_iter_logs_with_a_filter_pages_only_matching_entries_oldest_first(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        record(svc, 23)
        failures = list(svc.iter_logs(status="FAILURE", page_size=2))
        assert [e.parameters["to"] for e in failures] == [f"acct-{i}!" for i in (3, 7, 11, 15, 19)]
        assert [e.id for e in failures] == sorted(e.id for e in failures)
        out = io.StringIO()
        assert svc.export(out, status="FAILURE", page_size=2) == 5


@pytest.mark.asyncio
async def test_aiter_logs_with_a_filter_pages_like_iter_logs(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        record(svc, 9)
        got = [e async for e in svc.aiter_logs(status="SUCCESS", page_size=3)]
        assert got == list(svc.iter_logs(status="SUCCESS", page_size=3))
        assert len(got) == 7


# -- analytics ------------------------------------------------------------------------


def test_a_bucket_without_failures_counts_zero_failures(db_path: Path) -> None:
    with AuditService(db_path) as svc:
        record(svc, 3)  # acct-0..2: no failure
        [bucket] = svc.calls_over_time("1d")
        assert (bucket.calls, bucket.failures) == (3, 0)


# -- maintenance ----------------------------------------------------------------------


def test_a_failed_anchor_check_names_the_anchor_file(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "elsewhere" / "anchors.jsonl"
    anchors.parent.mkdir()
    with AuditService(db_path, hmac_key=KEY, anchor_path=anchors) as svc:
        record(svc, 5)
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("DELETE FROM audit_logs WHERE id > 3")
        conn.execute("UPDATE sqlite_sequence SET seq = 3 WHERE name = 'audit_logs'")
        conn.commit()
    with AuditService(db_path, hmac_key=KEY) as svc:
        report = svc.verify(anchors=anchors)
    assert not report.ok
    assert report.first_bad_id == 4
    assert str(anchors) in (report.problem or "")


def test_the_store_names_its_file(db_path: Path) -> None:
    """Loss and error messages say which file (``describe``)."""
    assert SQLiteAuditStore(db_path).describe() == str(db_path)


def test_purge_waits_for_a_busy_writer_instead_of_failing(db_path: Path) -> None:
    """Another process holds the write lock for a moment: purge waits its turn."""
    with AuditService(db_path) as svc:
        record(svc, 3)
        with closing(
            sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        ) as other:
            other.execute("BEGIN IMMEDIATE")
            release = threading.Timer(1.0, other.execute, ["COMMIT"])
            release.start()
            try:
                report = svc.purge("1d")
            finally:
                release.join()
        assert report.rows_deleted == 0
        assert len(svc.get_logs()) == 3


def test_a_reader_follows_a_trail_replaced_under_it(tmp_path: Path) -> None:
    """A restore from backup (or a rotation) swaps the file: the next read sees the new one."""
    db, other = tmp_path / "audit.db", tmp_path / "restored.db"
    for path, calls in ((db, 2), (other, 5)):
        with AuditService(path) as svc:
            record(svc, calls)
    reader = AuditService(db, read_only=True)
    try:
        assert reader.count() == 2
        os.replace(other, db)
        assert reader.count() == 5
        assert len(reader.get_logs()) == 5
    finally:
        reader.close()
