"""``backup``: a whole copy where asked, the source's files as found, a writer's lock waited for.

Why: the backup is the operator's way out after an incident, and it runs
beside live writers. It must create the folders it is pointed at, leave the
source's ``-wal``/``-shm`` exactly as it found them (absent stays absent, and
files in use or left by another process are not touched), and wait for a
writer's lock (``busy_timeout``) rather than fail at once. Driven on real files
through the function the service runs in its thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from finops_audit import AuditService, audit_tool_sync
from finops_audit.exceptions import AuditStorageError
from finops_audit.maintenance import BackupReport
from finops_audit.storage import _sqlite_maintenance as maintenance_sql
from finops_audit.storage._sqlite_trail import open_trail_readonly
from finops_audit.storage.sqlite import SCHEMA_VERSION

from .test_legacy_schema import _seed


def trail(path: Path, calls: int = 3) -> None:
    with AuditService(path) as service:

        @audit_tool_sync(service=service)
        def lookup(account: str) -> str:
            return account

        for i in range(calls):
            lookup(account=f"acct-{i}")


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_backup_creates_the_folders_it_is_pointed_at(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    trail(db, calls=4)
    dest = tmp_path / "backups" / "2026" / "trail.db"
    report = maintenance_sql.backup(db, dest, SCHEMA_VERSION)
    assert report == BackupReport(path=dest, bytes=dest.stat().st_size, rows=4)
    assert dest.stat().st_mode & 0o777 == 0o600
    with contextlib.closing(sqlite3.connect(dest)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0] == 4


def test_a_backup_of_a_closed_trail_leaves_no_companion_files(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    trail(db)
    assert names(tmp_path) == ["trail.db"]
    maintenance_sql.backup(db, tmp_path / "copy.db", SCHEMA_VERSION)
    assert names(tmp_path) == ["copy.db", "trail.db"]


@pytest.mark.parametrize("other_still_open", [True, False], ids=["open", "gone"])
def test_a_backup_leaves_companion_files_it_found_in_place(
    tmp_path: Path, other_still_open: bool
) -> None:
    # another reader made the -wal/-shm (and may still use them): not ours to remove
    db = tmp_path / "trail.db"
    trail(db)
    other = open_trail_readonly(db, known=SCHEMA_VERSION)
    try:
        if not other_still_open:
            other.close()
        assert names(tmp_path) == ["trail.db", "trail.db-shm", "trail.db-wal"]
        maintenance_sql.backup(db, tmp_path / "copy.db", SCHEMA_VERSION)
    finally:
        other.close()
    assert names(tmp_path) == ["copy.db", "trail.db", "trail.db-shm", "trail.db-wal"]


def test_a_backup_waits_for_a_writers_lock(tmp_path: Path) -> None:
    # a trail in rollback-journal mode (the design note's): a writer's lock blocks readers
    db = tmp_path / "seed.db"
    _seed(db)
    dest = tmp_path / "copy.db"
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(maintenance_sql.backup(db, dest, SCHEMA_VERSION, busy_ms=60_000))
        except AuditStorageError as exc:
            outcome.append(exc)

    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as writer:
        writer.execute("BEGIN EXCLUSIVE")
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(0.5)  # let the backup meet the lock (it cannot finish while it is held)
        writer.execute("COMMIT")
    worker.join(60)
    assert not worker.is_alive()
    [result] = outcome
    assert isinstance(result, BackupReport), result
    assert result.rows == 5


def test_a_backup_without_patience_names_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "seed.db"
    _seed(db)
    dest = tmp_path / "copy.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as writer:
        writer.execute("BEGIN EXCLUSIVE")
        with pytest.raises(AuditStorageError) as caught:
            maintenance_sql.backup(db, dest, SCHEMA_VERSION, busy_ms=0)
        writer.execute("COMMIT")
    assert str(caught.value) == f"cannot read audit database {db}: database is locked"
    assert names(tmp_path) == ["seed.db"]


def test_a_file_where_the_backup_folder_must_be_is_named_as_such(tmp_path: Path) -> None:
    """The folder, not the destination, is what is in the way: say so."""
    blocker = tmp_path / "backups"
    blocker.write_text("not a folder")
    with (
        AuditService(db_path=tmp_path / "trail.db") as svc,
        pytest.raises(AuditStorageError) as caught,
    ):
        svc.backup(blocker / "copy.db")
    message = str(caught.value)
    assert "already exists" not in message
    assert message == f"cannot write backup {blocker / 'copy.db'}: {blocker} is not a folder"
    assert blocker.read_text() == "not a folder"
