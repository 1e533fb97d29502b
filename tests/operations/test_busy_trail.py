"""A trail another process keeps locked: the writer's open fails clearly, in bounded time.

Another process (here a plain ``sqlite3`` connection) holds the write lock
longer than ``busy_timeout``. Opening the store for writing must then raise
:class:`AuditStorageError` naming the file and the lock, after about the busy
timeout: never hang, never leak another exception type, and open normally once
the lock is gone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from finops_audit import AuditService, AuditStorageError, audit_tool_sync
from finops_audit.storage.sqlite import SQLiteAuditStore


def one_call(db_path: Path) -> None:
    with AuditService(db_path) as svc:

        @audit_tool_sync(service=svc)
        def pay(to: str) -> str:
            return to

        pay("acct-1")


async def open_and_close(store: SQLiteAuditStore) -> None:
    try:
        await store.open()
    finally:
        await store.close()


def test_opening_a_trail_locked_past_the_busy_timeout_is_a_storage_error(db_path: Path) -> None:
    one_call(db_path)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            store = SQLiteAuditStore(db_path, busy_timeout=0.1)
            with pytest.raises(AuditStorageError) as info:
                asyncio.run(open_and_close(store))
            assert str(db_path) in str(info.value)
            assert "locked" in str(info.value)
        finally:
            other.execute("ROLLBACK")
    asyncio.run(open_and_close(SQLiteAuditStore(db_path, busy_timeout=0.1)))
    with AuditService(db_path) as svc:
        assert svc.count() == 1
