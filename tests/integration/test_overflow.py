"""The bounded queue: what happens when the database cannot keep up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from finops_audit import AuditQueueFullError, AuditService, audit_tool, audit_tool_sync
from tests.helpers import WriteLock, disk_rows, wait_until

GAP = "__audit_gap__"


@pytest.fixture
def make_small(db_path: Path) -> Iterator:
    """A service with a 10-entry queue, started, whose file exists."""
    made: list[AuditService] = []

    def make(policy: str, **kwargs: object) -> AuditService:
        options = {"busy_timeout": 0.05, "block_timeout": 0.2, "close_timeout": 10, **kwargs}
        svc = AuditService(
            db_path=db_path, queue_size=10, batch_size=10, overflow_policy=policy, **options
        )
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def _tool(svc: AuditService):
    calls = []

    @audit_tool_sync(service=svc)
    def tag(seq: int) -> int:
        calls.append(seq)
        return seq

    tag(-1)
    svc.flush()  # the writer runs and the file exists before we lock it
    calls.clear()
    return tag, calls


def _check_everything_accepted_is_written(svc: AuditService, db_path: Path) -> None:
    svc.flush()
    stats = svc.stats()
    assert stats.accepted == stats.written
    assert stats.pending == 0
    rows = disk_rows(db_path)
    assert len([r for r in rows if r["tool_name"] != GAP]) == stats.written
    svc.close()
    # The trail itself says how many entries are missing.
    gaps = [r for r in disk_rows(db_path) if r["tool_name"] == GAP]
    assert sum(r["parameters"]["dropped"] for r in gaps) == svc.stats().dropped
    assert all(r["status"] == "FAILURE" for r in gaps)


def test_drop_policy_counts_excess_entries_and_tools_still_return(
    make_small, db_path: Path
) -> None:
    svc = make_small("drop")
    tag, calls = _tool(svc)
    with WriteLock(db_path):
        results = [tag(i) for i in range(40)]
        assert results == list(range(40))
        stats = svc.stats()
        # at most one batch in flight plus a full queue can be held
        assert stats.accepted + stats.dropped == 41
        assert stats.dropped >= 20
        assert stats.written == 1
    assert calls == list(range(40))
    _check_everything_accepted_is_written(svc, db_path)


def test_raise_policy_raises_queue_full_error(make_small, db_path: Path) -> None:
    svc = make_small("raise")
    tag, calls = _tool(svc)
    errors: list[AuditQueueFullError] = []
    with WriteLock(db_path):
        for i in range(40):
            try:
                assert tag(i) == i
            except AuditQueueFullError as exc:
                errors.append(exc)
        stats = svc.stats()
    raised = len(errors)
    assert all(isinstance(e, RuntimeError) for e in errors)
    assert all("full" in str(e) for e in errors)
    assert raised >= 20
    assert stats.dropped == raised
    assert stats.accepted + raised == 41
    assert calls == list(range(40))  # the tool itself ran every time
    _check_everything_accepted_is_written(svc, db_path)


@pytest.mark.asyncio
async def test_raise_policy_in_async_tools(make_small, db_path: Path) -> None:
    svc = make_small("raise")
    _tool(svc)

    @audit_tool(service=svc)
    async def check(seq: int) -> int:
        return seq

    raised = 0
    with WriteLock(db_path):
        for i in range(40):
            try:
                await check(i)
            except AuditQueueFullError:
                raised += 1
    assert raised >= 20
    assert svc.stats().dropped == raised
    _check_everything_accepted_is_written(svc, db_path)


def test_block_policy_waits_then_drops_and_counts(make_small, db_path: Path) -> None:
    svc = make_small("block", block_timeout=0.2)
    tag, _ = _tool(svc)
    with WriteLock(db_path):
        assert [tag(i) for i in range(30)] == list(range(30))
        stats = svc.stats()
        assert stats.accepted + stats.dropped == 31
        assert stats.dropped >= 10
    _check_everything_accepted_is_written(svc, db_path)


@pytest.mark.asyncio
async def test_block_policy_drops_and_counts_for_async_tools(make_small, db_path: Path) -> None:
    svc = make_small("block", block_timeout=0.2)
    _tool(svc)

    @audit_tool(service=svc)
    async def check(seq: int) -> int:
        return seq

    with WriteLock(db_path):
        assert [await check(i) for i in range(30)] == list(range(30))
        stats = svc.stats()
        assert stats.accepted + stats.dropped == 31
        assert stats.dropped >= 10
    _check_everything_accepted_is_written(svc, db_path)


def test_block_policy_admits_a_waiting_caller_once_there_is_room(make_small, db_path: Path) -> None:
    # A slow (not broken) database: the writer waits on the lock inside one
    # attempt, so callers get backpressure instead of losing entries.
    svc = make_small("block", busy_timeout=30, block_timeout=30)
    tag, calls = _tool(svc)
    lock = WriteLock(db_path)
    finished = threading.Event()

    def caller() -> None:
        for i in range(25):
            tag(i)
        finished.set()

    worker = threading.Thread(target=caller)
    try:
        worker.start()
        # one batch held by the stuck writer plus a full queue
        wait_until(lambda: svc.stats().pending >= 20)
        assert not finished.wait(0.3), "the caller should be waiting for room"
        assert svc.stats().dropped == 0
    finally:
        lock.release()
    worker.join(timeout=30)
    assert finished.is_set()
    assert calls == list(range(25))
    svc.flush()
    stats = svc.stats()
    assert stats.dropped == 0
    assert stats.written == stats.accepted == 26
    assert sorted(r["parameters"]["seq"] for r in disk_rows(db_path)) == list(range(-1, 25))


@pytest.mark.asyncio
async def test_block_policy_never_blocks_the_event_loop(make_small, db_path: Path) -> None:
    svc = make_small("block", busy_timeout=30, block_timeout=30)
    _tool(svc)

    @audit_tool(service=svc)
    async def check(seq: int) -> int:
        return seq

    lock = WriteLock(db_path)
    try:
        for i in range(20):  # a batch in flight, then a full queue
            assert await check(i) == i
        assert svc.stats().pending == 20
        waiting = asyncio.create_task(check(20))
        ticks = 0
        for _ in range(20):  # the loop keeps running other tasks meanwhile
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20
        done, _ = await asyncio.wait({waiting}, timeout=0.2)
        assert not done, "the call should be waiting for room"
    finally:
        lock.release()
    assert await waiting == 20
    await svc.aflush()
    stats = svc.stats()
    assert stats.dropped == 0
    assert stats.written == stats.accepted == 22


@pytest.mark.asyncio
async def test_a_call_cancelled_while_waiting_for_room_is_not_lost_silently(
    make_small, db_path: Path
) -> None:
    svc = make_small("block", busy_timeout=30, block_timeout=30)
    _tool(svc)

    @audit_tool(service=svc)
    async def check(seq: int) -> int:
        return seq

    lock = WriteLock(db_path)
    try:
        for i in range(20):  # a batch in flight, then a full queue
            await check(i)
        waiting = asyncio.create_task(check(20))
        done, _ = await asyncio.wait({waiting}, timeout=0.2)
        assert not done, "the call should be waiting for room"
        waiting.cancel()  # e.g. the client went away, or the server is shutting down
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        lock.release()
    await svc.aflush()
    stats = svc.stats()
    # 1 + 20 accepted calls, and the cancelled one: on disk or at least counted.
    assert stats.written + stats.dropped == 22, stats


def test_the_gap_row_says_how_many_were_dropped_when_and_why(make_small, db_path: Path) -> None:
    """An auditor reading only the trail learns the count, the time span and the reason."""
    svc = make_small("drop")
    tag, _ = _tool(svc)
    with WriteLock(db_path):
        for i in range(40):  # a queue of 10 (and a batch in flight): the rest are dropped
            tag(i)
        first_drops = svc.stats().dropped
        assert first_drops >= 1
        stamp = time.time_ns()
        while time.time_ns() == stamp:  # the next drop gets a later clock reading
            pass
        tag(99)  # dropped too, later
    svc.close()
    [gap] = [r for r in disk_rows(db_path) if r["tool_name"] == GAP]
    dropped = svc.stats().dropped
    assert dropped == first_drops + 1
    params = gap["parameters"]
    assert params["dropped"] == dropped
    assert params["reason"] == "the queue is full (policy drop)"
    assert params["first_dropped_at"] < params["last_dropped_at"]
    assert gap["status"] == "FAILURE"
    assert gap["error_message"] == (
        f"AuditGap: {dropped} audit entries were dropped between "
        f"{params['first_dropped_at']} and {params['last_dropped_at']} "
        "because the queue is full (policy drop)"
    )
