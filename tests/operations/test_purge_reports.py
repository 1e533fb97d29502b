"""What a purge reports, and where verify says a gap starts after purges.

Why: ``finops-audit purge`` and the retention log print the report; an
operator reading "deleted 1 rows" after an empty purge, or a report without
the id the trail now starts after, is misled. And after a purge, rows missing
in front of the trail must be reported from the first id no signed checkpoint
accounts for, not from 1 nor past the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from finops_audit import AuditService
from finops_audit._chain import Chainer
from finops_audit.maintenance import PurgeReport
from finops_audit.storage import _sqlite_maintenance as maintenance_sql

from ._util import at, execute, insert_rows, stamp
from .test_tamper import KEY, checkpoints, verify
from .test_verify import make_trail

CHAINER = Chainer(KEY.encode())


def purge(db_path: Path, cutoff: str, batch: int = 5000, max_id: int | None = None) -> PurgeReport:
    return asyncio.run(
        maintenance_sql.purge(db_path, 5000, CHAINER, cutoff, batch=batch, max_id=max_id)
    )


def test_a_purge_in_batches_reports_rows_batches_and_where_the_trail_starts(
    db_path: Path,
) -> None:
    make_trail(db_path, hmac_key=KEY)
    report = purge(db_path, "9999", batch=4, max_id=9)
    assert report == PurgeReport(rows_deleted=9, through_id=9, batches=3)
    assert [(row[2], row[4]) for row in checkpoints(db_path)] == [(4, 4), (8, 4), (9, 1)]
    assert verify(db_path).checkpoint_through_id == 9


def test_a_purge_with_nothing_old_enough_reports_nothing(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    assert purge(db_path, "0000") == PurgeReport(rows_deleted=0, through_id=None, batches=0)
    assert checkpoints(db_path) == []
    assert verify(db_path).rows_checked == 10


def test_purging_an_empty_trail_reports_nothing(db_path: Path) -> None:
    with AuditService(db_path, hmac_key=KEY) as service:
        service.flush()
        assert service.purge(timedelta(microseconds=1)) == PurgeReport(
            rows_deleted=0, through_id=None, batches=0
        )


def test_the_service_purge_reports_every_row_older_than_asked(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    with AuditService(db_path, hmac_key=KEY) as service:
        assert service.purge(timedelta(microseconds=1)) == PurgeReport(
            rows_deleted=10, through_id=10, batches=1
        )
        assert service.count() == 0
        assert service.verify().ok


def test_rows_deleted_after_a_purge_are_reported_from_the_first_unaccounted_id(
    db_path: Path,
) -> None:
    make_trail(db_path, hmac_key=KEY)
    purge(db_path, "9999", batch=3, max_id=6)  # checkpoints through 3 and 6
    execute(db_path, "DELETE FROM audit_logs WHERE id IN (7, 8)")
    report = verify(db_path)
    assert (report.ok, report.first_bad_id, report.rows_checked) == (False, 7, 0)
    assert report.problem == ("rows 1..8 are missing and no purge checkpoint accounts for them")


def test_a_row_slipped_in_under_a_checkpoint_does_not_hide_the_gap_before_it(
    db_path: Path,
) -> None:
    make_trail(db_path, hmac_key=KEY)
    purge(db_path, "9999", batch=3, max_id=9)  # checkpoints through 3, 6 and 9
    # an intruder puts back a row 9 (purged) so the trail seems to start right there
    execute(
        db_path,
        "INSERT INTO audit_logs (id, timestamp, tool_name, parameters, status) "
        "SELECT 9, timestamp, tool_name, parameters, status FROM audit_logs WHERE id = 10",
    )
    report = verify(db_path)
    assert (report.ok, report.first_bad_id) == (False, 7)


def test_a_purge_removes_exactly_the_rows_before_the_cutoff(db_path: Path) -> None:
    make_trail(db_path, rows=1, hash_chain=False)  # creates the file; its row goes
    execute(db_path, "DELETE FROM audit_logs")
    insert_rows(db_path, [(s, "scan", 1.0, None) for s in range(10)])  # ids 2..11, T0 .. T0+9s
    report = purge(db_path, stamp(at(5)))
    assert report == PurgeReport(rows_deleted=5, through_id=6, batches=1)
    with AuditService(db_path, hash_chain=False) as service:
        assert sorted(e.id for e in service.get_logs()) == [7, 8, 9, 10, 11]


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("india_time")
def test_a_checkpoint_is_stamped_in_utc_whatever_the_local_zone(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    before = datetime.now(timezone.utc)
    purge(db_path, "9999", max_id=3)
    after = datetime.now(timezone.utc)
    [row] = checkpoints(db_path)
    created = datetime.fromisoformat(str(row[1]))
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= after
    assert verify(db_path).ok


def test_a_purge_waits_for_a_writers_lock(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    outcome: list[object] = []

    def run() -> None:
        outcome.append(
            asyncio.run(maintenance_sql.purge(db_path, 60_000, CHAINER, "9999", max_id=4))
        )

    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(0.5)  # let the purge meet the lock (it cannot finish while it is held)
        writer.execute("COMMIT")
    worker.join(60)
    assert not worker.is_alive()
    assert outcome == [PurgeReport(rows_deleted=4, through_id=4, batches=1)]


def test_a_purge_the_database_refuses_deletes_nothing_and_says_why(db_path: Path) -> None:
    # an operator made the table append-only with a trigger: the purge's DELETE fails
    make_trail(db_path, hmac_key=KEY)
    execute(
        db_path,
        "CREATE TRIGGER keep_everything BEFORE DELETE ON audit_logs "
        "BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END",
    )
    with pytest.raises(sqlite3.IntegrityError, match="audit_logs is append-only"):
        purge(db_path, "9999", max_id=4)
    assert checkpoints(db_path) == []
    assert verify(db_path).rows_checked == 10
