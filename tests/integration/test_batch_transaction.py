"""Each batch is one synchronous call on the writer's thread, its transaction whole.

Why: a batch used to make four aiosqlite round trips (BEGIN, chain tail,
executemany, COMMIT) plus two for an anchor, each waking two threads. Now
:func:`finops_audit.storage._sqlite_batch.write_batch` does all of it in one
call on the thread that owns the writer's connection. These tests hold it to
that (no call into any aiosqlite thread; SQLite's own trace shows every
statement ran on the calling thread; the coroutine never suspends inside a
batch, so neither cancellation nor a fork can split one) and attack what one
call must still guarantee: a failure anywhere rolls the whole batch back and
leaves the file writable for others, the chain and anchors stay right, and a
replaced file is reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from finops_audit._anchors import AnchorLog, read_anchors
from finops_audit._chain import Chainer
from finops_audit.storage.sqlite import SQLiteAuditStore

CALLER = ("alice", "claude", "1.0", "s1", "r1", "cid", "t" * 32, "s" * 16, None)


def _row(i: int, caller: tuple[Any, ...] | None = None, tool: str = "tool") -> tuple[Any, ...]:
    return (
        f"2026-01-01T00:00:{i % 60:02d}.000000+00:00",
        tool,
        f'{{"i":{i}}}',
        "SUCCESS",
        None,
        0.5,
        *(caller or (None,) * 9),
    )


def _stored(path: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT id, tool_name, user, row_hash FROM audit_logs").fetchall()


class _Spy:
    """Counts the functions run in any aiosqlite connection thread (wraps, never replaces)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = aiosqlite.Connection._execute

        async def counting(conn: aiosqlite.Connection, fn: Callable[..., Any], *a: Any) -> Any:
            self.calls += 1
            return await real(conn, fn, *a)  # type: ignore[no-untyped-call]

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)


@pytest.mark.asyncio
async def test_a_chained_batch_is_one_call_on_the_writers_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "audit.db"
    anchors = AnchorLog(tmp_path / "anchors.log", Chainer(), str(db), interval=1e-9)
    store = SQLiteAuditStore(db, chainer=Chainer(), anchors=anchors)
    await store.open()
    assert store._writer is not None
    statements: list[tuple[str, int]] = []
    store._writer.set_trace_callback(lambda sql: statements.append((sql, threading.get_ident())))
    spy = _Spy(monkeypatch)
    try:
        # no suspension point: the batch and its anchor run in one step of the coroutine
        step = store.write_batch([_row(1), _row(2, CALLER), _row(3)]).__await__()
        with pytest.raises(StopIteration):
            next(step)
        await store.write_batch([_row(4)])
        assert spy.calls == 0, "no hop into another thread"
    finally:
        store._writer.set_trace_callback(None)
        await store.close()
    texts = [sql.split()[0].upper() for sql, _ in statements]
    assert texts[0] == "BEGIN"
    assert "COMMIT" in texts
    assert {tid for _, tid in statements} == {threading.get_ident()}, "all on this thread"
    rows = _stored(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (1, "tool", None),
        (2, "tool", "alice"),
        (3, "tool", None),
        (4, "tool", None),
    ]
    assert all(r[3] for r in rows)
    written = read_anchors(tmp_path / "anchors.log", Chainer())
    assert written, "an anchor is appended in the same call when due"
    assert written[-1].last_id == 4
    verify = SQLiteAuditStore(db, read_only=True)
    try:
        report = await verify.verify(Chainer())
    finally:
        await verify.close()
    assert report.ok, report


@pytest.mark.asyncio
@pytest.mark.parametrize("chained", [True, False], ids=["chained", "unchained"])
async def test_a_failure_mid_batch_rolls_the_whole_batch_back(
    tmp_path: Path, chained: bool
) -> None:
    db = tmp_path / "audit.db"
    store = SQLiteAuditStore(db, chainer=Chainer() if chained else None)
    await store.open()
    await store.write_batch([_row(1)])
    with contextlib.closing(sqlite3.connect(db)) as other:
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_logs WHEN NEW.tool_name = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
        other.commit()
    try:
        with pytest.raises(sqlite3.IntegrityError, match="refused by a trigger"):
            # the refused row comes after rows with and without a caller
            await store.write_batch([_row(2), _row(3, CALLER), _row(4, tool="boom"), _row(5)])
        assert store._writer is None, "the connection is dropped for a fresh retry"
        assert [r[0] for r in _stored(db)] == [1], "none of the failed batch landed"
        with contextlib.closing(sqlite3.connect(db, timeout=0)) as other:
            other.execute("BEGIN IMMEDIATE")  # no lock was left behind
            other.execute("DROP TRIGGER refuse")
            other.commit()
        await store.write_batch([_row(6), _row(7, CALLER)])
    finally:
        await store.close()
    rows = _stored(db)
    assert [r[2] for r in rows] == [None, None, "alice"]
    if chained:
        assert [r[0] for r in rows] == [1, 2, 3], "ids continue from the chain's tail"
        verify = SQLiteAuditStore(db, read_only=True)
        try:
            assert (await verify.verify(Chainer())).ok
        finally:
            await verify.close()


@pytest.mark.asyncio
async def test_a_batch_waits_for_another_writer_and_times_out_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    store = SQLiteAuditStore(db, chainer=Chainer(), busy_timeout=0.2)
    await store.open()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.write_batch([_row(1)])
        other.execute("ROLLBACK")
    try:
        await store.write_batch([_row(2)])  # reopens and goes on
    finally:
        await store.close()
    assert [r[0] for r in _stored(db)] == [1]


@pytest.mark.asyncio
async def test_a_replaced_file_is_reopened_before_the_batch(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    store = SQLiteAuditStore(db, chainer=Chainer())
    await store.open()
    await store.write_batch([_row(1)])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    try:
        await store.write_batch([_row(2)])
    finally:
        await store.close()
    assert [r[0] for r in _stored(db)] == [1], "the new file starts its own chain"


@pytest.mark.asyncio
async def test_a_purge_on_the_writers_loop_never_stalls_a_batch(tmp_path: Path) -> None:
    """A batch waits for the write lock on the writer's own thread, blocking its loop:
    so no other write transaction may need that loop to finish. A purge (retention,
    ``svc.purge()``) runs on the same loop: its transactions must end without it."""
    db = tmp_path / "audit.db"
    store = SQLiteAuditStore(db, chainer=Chainer(), busy_timeout=1.0)
    await store.open()
    for start in range(0, 12_000, 2_000):
        await store.write_batch([_row(i) for i in range(start, start + 2_000)])

    async def keep_writing() -> int:
        written = 0
        while not purge.done():
            await store.write_batch([_row(written)])  # raises "locked" if it stalled
            written += 1
            # a real writer pauses between batches (AUDIT_FLUSH_INTERVAL); back-to-back
            # transactions would starve any other writer (SQLite's lock is not fair)
            await asyncio.sleep(0.005)
        return written

    purge = asyncio.ensure_future(store.purge(datetime(2030, 1, 1, tzinfo=timezone.utc), Chainer()))
    try:
        written, report = await asyncio.gather(keep_writing(), purge)
    finally:
        await store.close()
    assert report.rows_deleted >= 12_000
    assert report.batches >= 3, "several purge transactions, writes between them"
    assert written >= 1
    verify = SQLiteAuditStore(db, read_only=True)
    try:
        assert (await verify.verify(Chainer())).ok
    finally:
        await verify.close()
