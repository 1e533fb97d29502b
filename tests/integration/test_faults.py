"""Database faults: tools keep working, the writer recovers, nothing is lost silently."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from finops_audit import (
    AuditService,
    AuditStorageError,
    AuditTimeoutError,
    audit_tool,
    audit_tool_sync,
)
from tests.helpers import WriteLock, disk_rows, wait_until


def test_locked_database_then_recovery(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with AuditService(db_path=path, busy_timeout=0.05, batch_size=10) as svc:

        @audit_tool_sync(service=svc)
        def tag(seq: int) -> int:
            return seq

        @audit_tool(service=svc)
        async def check(seq: int) -> int:
            return seq

        tag(-1)
        svc.flush()
        with WriteLock(path):
            assert [tag(i) for i in range(50)] == list(range(50))

            async def calls() -> list[int]:
                return [await check(i) for i in range(50)]

            assert asyncio.run(calls()) == list(range(50))
            wait_until(lambda: svc.stats().last_error is not None)
            during = svc.stats()
            assert "locked" in (during.last_error or "")
            # what failed, by its exception type, then the database's own words
            assert during.last_error == "OperationalError: database is locked"
            assert during.failed_writes >= 1
            assert during.dropped == 0
        svc.flush()
        after = svc.stats()
        assert after.last_error is None
        assert after.written == after.accepted == 101
        assert after.dropped == after.lost == 0
        rows = disk_rows(path)
        assert sorted(r["parameters"]["seq"] for r in rows if r["tool_name"] == "tag") == list(
            range(-1, 50)
        )
        assert sorted(r["parameters"]["seq"] for r in rows if r["tool_name"] == "check") == list(
            range(50)
        )


def test_locked_database_at_close_still_drains_once_released(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    svc = AuditService(db_path=path, busy_timeout=0.05, batch_size=10)

    @audit_tool_sync(service=svc)
    def tag(seq: int) -> int:
        return seq

    tag(-1)
    svc.flush()
    lock = WriteLock(path)
    for i in range(30):
        tag(i)
    wait_until(lambda: svc.stats().last_error is not None)
    closer = threading.Thread(target=svc.close)
    closer.start()
    wait_until(lambda: svc.closed)
    lock.release()
    closer.join(timeout=30)
    assert not closer.is_alive()
    assert len(disk_rows(path)) == 31
    assert svc.stats().lost == 0


def test_unusable_path_is_a_logged_error_never_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    path = blocker / "audit.db"
    caplog.set_level(logging.WARNING, logger="finops_audit")
    svc = AuditService(db_path=path, close_timeout=1)

    @audit_tool_sync(service=svc)
    def tag(seq: int) -> int:
        return seq

    assert [tag(i) for i in range(3)] == [0, 1, 2]
    wait_until(lambda: svc.stats().last_error is not None)
    assert str(path) in (svc.stats().last_error or "")
    assert any(str(path) in r.getMessage() for r in caplog.records)
    with pytest.raises(AuditTimeoutError) as info:
        svc.flush(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    # close() gives up on a database that never comes back, and says so.
    with pytest.raises((AuditStorageError, AuditTimeoutError)):
        svc.close()
    wait_until(lambda: not svc.stats().running)
    stats = svc.stats()
    assert stats.lost == 3
    assert stats.accepted == 3
    assert stats.written == 0
    svc.close()  # a second close stays quiet


def test_close_on_a_broken_database_reports_lost_entries(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    svc = AuditService(db_path=blocker / "audit.db", close_timeout=1)

    @audit_tool_sync(service=svc)
    def tag(seq: int) -> int:
        return seq

    for i in range(3):
        tag(i)
    # Let the retry backoff reach its ceiling, as it does in a long-running server.
    wait_until(lambda: svc.stats().failed_writes >= 9)
    try:
        with pytest.raises(AuditStorageError, match="3 audit entries"):
            svc.close()
    finally:
        wait_until(lambda: not svc.stats().running)
    assert svc.stats().lost == 3
