"""Closing one of several handles on a file while the file is locked (issue 12 §4).

The facade hands closing to ``_trails.close_handle``/``aclose_handle``: a handle
that is not the last one only flushes, and when that flush cannot finish it
says so once and leaves the shared writer running for the other handles, which
still write every entry once the lock is gone. A real exclusive lock on a real
file, no mocks.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from finops_audit import AuditService, audit_tool, audit_tool_sync
from tests.helpers import disk_count


def _tag(svc: AuditService) -> Callable[[str], str]:
    @audit_tool_sync(service=svc)
    def tag(resource: str) -> str:
        return resource

    return tag


def _lock(path: Path) -> contextlib.closing[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return contextlib.closing(conn)


def test_closing_one_handle_behind_a_lock_keeps_the_shared_writer(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = AuditService(db_path=db_path)
    second = AuditService(db_path=db_path)
    try:
        tag = _tag(first)
        tag("before")
        first.flush()
        with _lock(db_path) as locker:
            tag("behind the lock")
            with caplog.at_level(logging.WARNING, logger="finops_audit"):
                first.close(timeout=0.2)
            assert first.closed
            assert not second.closed, "closing one handle stopped the others' writer"
            locker.execute("COMMIT")
        second.flush()
        assert disk_count(db_path) == 2
        assert [
            r.getMessage() for r in caplog.records if "keeps them and retries" in r.getMessage()
        ]
        assert str(db_path.resolve()) in caplog.text
        first.close()  # twice: a no-op
    finally:
        second.close()
    assert disk_count(db_path) == 2


@pytest.mark.asyncio
async def test_aclosing_one_handle_behind_a_lock_keeps_the_shared_writer(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = AuditService(db_path=db_path)
    second = AuditService(db_path=db_path)
    try:

        @audit_tool(service=first)
        async def tag(resource: str) -> str:
            return resource

        await tag("before")
        await first.aflush()
        with _lock(db_path) as locker:
            await tag("behind the lock")
            with caplog.at_level(logging.WARNING, logger="finops_audit"):
                await first.aclose(timeout=0.2)
            assert first.closed
            assert not second.closed, "closing one handle stopped the others' writer"
            locker.execute("COMMIT")
        await second.aflush()
        assert disk_count(db_path) == 2
        assert "keeps them and retries" in caplog.text
        await first.aclose()  # twice: a no-op
    finally:
        await second.aclose()
    assert disk_count(db_path) == 2


def test_the_last_handle_closes_the_writer_after_the_lock_is_gone(db_path: Path) -> None:
    first = AuditService(db_path=db_path)
    second = AuditService(db_path=db_path)
    tag = _tag(second)
    tag("one")
    first.close()
    assert not second.closed
    tag("two")
    second.close()
    assert second.closed
    assert disk_count(db_path) == 2
