"""What opening and reading a trail say, and do, when the file is not as expected.

A message is the user's only lead: the shared-mode warning names the file, its
mode and the command that fixes it; a read that fails names the file and the
cause. A trail path in folders that do not exist yet is created, privately.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from finops_audit import AuditService, AuditStorageError, audit_tool_sync


def one_call(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def pay(to: str) -> str:
        return to

    pay("acct-1")


def test_the_shared_mode_warning_names_the_file_its_mode_and_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "shared-mode.db"
    with AuditService(db) as svc:
        one_call(svc)
    os.chmod(db, 0o640)
    caplog.set_level(logging.WARNING, logger="finops_audit")
    with AuditService(db) as svc:
        one_call(svc)
    [message] = [r.getMessage() for r in caplog.records if "others can read it" in r.getMessage()]
    assert message == (
        f"audit database {db} has mode 0o640: others can read it; run `chmod 600 {db}`"
    )


def test_a_trail_in_folders_that_do_not_exist_yet_is_created_privately(tmp_path: Path) -> None:
    db = tmp_path / "var" / "lib" / "audit" / "trail.db"
    with AuditService(db) as svc:
        one_call(svc)
        assert svc.count() == 1
    assert db.stat().st_mode & 0o777 == 0o600


def test_a_read_that_fails_names_the_file_and_the_cause(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with AuditService(db) as svc:
        one_call(svc)
    reader = AuditService(db, read_only=True)
    try:
        assert reader.count() == 1
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("ALTER TABLE audit_logs RENAME TO audit_logs_gone")
            conn.commit()
        with pytest.raises(AuditStorageError) as info:
            reader.count()
    finally:
        reader.close()
    assert str(info.value).startswith(f"cannot read audit database {db}: ")
    assert "audit_logs" in str(info.value)
