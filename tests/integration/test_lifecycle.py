"""flush / close / context managers / use after close / GC / files on disk."""

from __future__ import annotations

import gc
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from finops_audit import (
    AuditClosedError,
    AuditConfigError,
    AuditService,
    audit_tool,
    audit_tool_sync,
)
from tests.helpers import disk_count, disk_rows


def _sync_tool(svc: AuditService):
    @audit_tool_sync(service=svc)
    def tag(resource: str) -> str:
        return resource

    return tag


def _async_tool(svc: AuditService):
    @audit_tool(service=svc)
    async def check(resource: str) -> str:
        return resource

    return check


def test_close_drains_everything_accepted(svc: AuditService, db_path: Path) -> None:
    tag = _sync_tool(svc)
    for i in range(2500):
        tag(f"r{i}")
    svc.close()
    assert svc.closed
    rows = disk_rows(db_path)
    assert sorted(r["parameters"]["resource"] for r in rows) == sorted(f"r{i}" for i in range(2500))
    stats = svc.stats()
    assert stats.written == 2500
    assert stats.dropped == stats.lost == stats.pending == 0
    assert stats.closed
    assert not stats.running


def test_close_twice_is_safe(svc: AuditService, db_path: Path) -> None:
    _sync_tool(svc)("r")
    svc.close()
    svc.close()
    assert disk_count(db_path) == 1


def test_close_of_a_service_never_used_is_safe(tmp_path: Path) -> None:
    svc = AuditService(db_path=tmp_path / "unused.db")
    svc.close()
    svc.close()
    assert svc.closed


@pytest.mark.asyncio
async def test_aclose_drains_and_is_safe_twice(svc: AuditService, db_path: Path) -> None:
    check = _async_tool(svc)
    for i in range(300):
        assert await check(f"r{i}") == f"r{i}"
    await svc.aclose()
    await svc.aclose()
    svc.close()
    assert svc.closed
    assert disk_count(db_path) == 300


def test_with_block_closes_and_drains(tmp_path: Path) -> None:
    path = tmp_path / "with.db"
    with AuditService(db_path=path) as svc:
        tag = _sync_tool(svc)
        for i in range(100):
            tag(f"r{i}")
    assert svc.closed
    assert disk_count(path) == 100


def test_with_block_closes_even_when_the_body_raises(tmp_path: Path) -> None:
    path = tmp_path / "with.db"
    svc = AuditService(db_path=path)

    def body() -> None:
        with svc:
            _sync_tool(svc)("r")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        body()
    assert svc.closed
    assert disk_count(path) == 1


@pytest.mark.asyncio
async def test_async_with_closes_and_drains(tmp_path: Path) -> None:
    path = tmp_path / "awith.db"
    async with AuditService(db_path=path) as svc:
        check = _async_tool(svc)
        for i in range(100):
            await check(f"r{i}")
    assert svc.closed
    assert disk_count(path) == 100


def test_sync_calls_after_close_still_work_and_are_counted(svc: AuditService) -> None:
    tag = _sync_tool(svc)
    tag("before")
    svc.close()
    assert [tag(f"after{i}") for i in range(5)] == [f"after{i}" for i in range(5)]
    assert svc.stats().dropped == 5
    assert svc.stats().written == 1


@pytest.mark.asyncio
async def test_async_calls_after_close_still_work_and_are_counted(svc: AuditService) -> None:
    check = _async_tool(svc)
    await check("before")
    await svc.aclose()
    assert [await check(f"after{i}") for i in range(3)] == [f"after{i}" for i in range(3)]
    assert svc.stats().dropped == 3


def test_failing_calls_after_close_still_raise_their_own_error(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def broken() -> None:
        raise ValueError("bad region")

    svc.close()
    with pytest.raises(ValueError, match="bad region"):
        broken()
    assert svc.stats().dropped == 1


def test_queries_and_flush_after_close_raise_closed_error(svc: AuditService) -> None:
    _sync_tool(svc)("r")
    svc.close()
    for call in (svc.get_logs, svc.flush):
        with pytest.raises(AuditClosedError, match="closed") as info:
            call()
        assert isinstance(info.value, RuntimeError)


@pytest.mark.asyncio
async def test_async_queries_and_flush_after_close_raise_closed_error(svc: AuditService) -> None:
    await svc.aclose()
    with pytest.raises(AuditClosedError, match="closed"):
        await svc.aget_logs()
    with pytest.raises(AuditClosedError, match="closed"):
        await svc.aflush()


def test_flush_on_a_service_never_used_returns(svc: AuditService, db_path: Path) -> None:
    svc.flush()
    assert svc.get_logs() == []


def test_garbage_collecting_an_open_started_service_warns(tmp_path: Path) -> None:
    svc = AuditService(db_path=tmp_path / "gc.db")
    _sync_tool(svc)("r")  # starts the writer
    writer = svc._writer  # only to shut it down below, whatever happens
    try:
        with pytest.warns(ResourceWarning, match="close"):  # noqa: PT031
            del svc  # collected here by refcount, or below by the cycle collector
            gc.collect()
    finally:
        writer.close()
    assert disk_count(tmp_path / "gc.db") == 1


def test_garbage_collecting_a_closed_service_is_silent(tmp_path: Path) -> None:
    svc = AuditService(db_path=tmp_path / "gc.db")
    _sync_tool(svc)("r")
    svc.close()
    del svc
    gc.collect()  # filterwarnings=error turns any ResourceWarning into a failure


# --------------------------------------------------------------------------- files


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_and_companions_are_private_even_with_a_permissive_umask(
    tmp_path: Path,
) -> None:
    path = tmp_path / "private.db"
    old = os.umask(0)
    try:
        svc = AuditService(db_path=path)
        tag = _sync_tool(svc)
        tag("r")
        svc.flush()
    finally:
        os.umask(old)
    try:
        for companion in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert companion.exists(), companion
            assert _mode(companion) == 0o600, (companion, oct(_mode(companion)))
    finally:
        svc.close()
    assert _mode(path) == 0o600


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "audit.db"
    with AuditService(db_path=path) as svc:
        _sync_tool(svc)("r")
    assert disk_count(path) == 1
    assert _mode(path) == 0o600


def test_in_memory_database_is_usable_or_refused_clearly(tmp_path: Path) -> None:
    try:
        svc = AuditService(db_path=":memory:")
    except AuditConfigError:
        return
    with svc:
        _sync_tool(svc)("r")
        assert len(svc.get_logs()) == 1
    assert not (tmp_path / ":memory:").exists()


def test_a_database_written_by_the_seed_implementation_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE audit_logs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            timestamp TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            parameters TEXT NOT NULL,
            status TEXT NOT NULL,
            error_message TEXT,
            execution_time_ms REAL
        );
        CREATE INDEX idx_audit_timestamp ON audit_logs(timestamp);
        INSERT INTO audit_logs VALUES
            (1, '2025-01-02T03:04:05.678901+00:00', 'old_tool', '{"region": "eu"}',
             'SUCCESS', NULL, 12.5),
            (2, '2025-01-02T03:04:06.000001+00:00', 'old_tool', '{"region": "us"}',
             'FAILURE', 'ValueError: bad region', 3.0);
        """
    )
    conn.commit()
    conn.close()
    with AuditService(db_path=path) as svc:
        _sync_tool(svc)("new")
        newest, failed, ok = svc.get_logs()
        assert newest.parameters == {"resource": "new"}
        assert failed.error_message == "ValueError: bad region"
        assert failed.parameters == {"region": "us"}
        assert ok.timestamp.isoformat() == "2025-01-02T03:04:05.678901+00:00"
        assert svc.get_logs(until="2025-12-31") == [failed, ok]
    assert disk_count(path) == 3
