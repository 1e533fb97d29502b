"""File hygiene: the trail, its -wal/-shm, backups and exports are private (0600);
opening a trail others can read logs one warning."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from finops_audit import AuditService, audit_tool_sync

from ._util import mode


def _call(service: AuditService) -> None:
    @audit_tool_sync(service=service)
    def ping(i: int) -> int:
        return i

    ping(1)
    service.flush()


def test_database_wal_shm_and_backup_are_0600(tmp_path: Path, db_path: Path) -> None:
    old = os.umask(0o022)  # a typical umask must not widen anything
    try:
        with AuditService(db_path) as service:
            _call(service)
            files = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
            assert all(p.exists() for p in files)
            assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
            report = service.backup(tmp_path / "nested" / "copy.db")
            assert report.rows == 1
            assert report.bytes == (tmp_path / "nested" / "copy.db").stat().st_size
            assert mode(report.path) == 0o600
    finally:
        os.umask(old)
    assert mode(db_path) == 0o600


@pytest.mark.asyncio
async def test_abackup_is_private_and_complete(tmp_path: Path, db_path: Path) -> None:
    async with AuditService(db_path) as service:
        _call(service)
        report = await service.abackup(tmp_path / "a.db")
    assert (report.rows, mode(report.path)) == (1, 0o600)


def test_backup_refuses_an_existing_file(tmp_path: Path, svc: AuditService) -> None:
    dest = tmp_path / "exists.db"
    dest.write_text("keep")
    with pytest.raises(OSError, match="already exists"):
        svc.backup(dest)
    assert dest.read_text() == "keep"


def test_a_readable_database_warns_once(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with AuditService(db_path) as service:
        _call(service)
    os.chmod(db_path, 0o644)
    caplog.set_level(logging.WARNING, logger="finops_audit")
    first, second = AuditService(db_path), AuditService(db_path)
    try:
        _call(first)
        _call(second)
    finally:
        first.close()
        second.close()
    with AuditService(db_path) as third:
        _call(third)
    warnings = [
        r
        for r in caplog.records
        if r.name == "finops_audit" and "others can read it" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert str(db_path) in warnings[0].getMessage()
    assert "chmod 600" in warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING


def test_a_private_database_does_not_warn(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    for _ in range(2):
        with AuditService(db_path) as service:
            _call(service)
    assert not [r for r in caplog.records if "others can read it" in r.getMessage()]
