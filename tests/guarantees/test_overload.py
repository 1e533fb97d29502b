"""Guarantee 3: overload is never silent.

A tiny queue (50 entries, batches of 10) and a writer stalled by another
connection holding SQLite's write lock. Whatever the policy, every call's
result is unchanged, every entry is either written or counted as dropped,
the trail carries a gap row that adds up to the drops, and the drop warning
is logged once per interval, not once per entry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from finops_audit import AuditQueueFullError, AuditService, AuditStatus, audit_tool, audit_tool_sync
from finops_audit._writer import GAP_TOOL_NAME
from tests.guarantees._support import WriteLock, rows, wait_until

QUEUE = 50
BATCH = 10


class Stall:
    """A service whose writer is stuck behind another connection's write lock."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.db = tmp_path / "audit.db"
        settings.setdefault("busy_timeout", 0.05)
        self.svc = AuditService(self.db, queue_size=QUEUE, batch_size=BATCH, **settings)
        self.ran: list[int] = []

        @audit_tool_sync(name="spend", service=self.svc)
        def spend(seq: int) -> int:
            self.ran.append(seq)
            return seq

        @audit_tool(name="aspend", service=self.svc)
        async def aspend(seq: int) -> int:
            self.ran.append(seq)
            return seq

        self.spend, self.aspend = spend, aspend
        assert spend(seq=-1) == -1
        self.svc.flush()  # the file and its schema exist before the lock is taken
        self.lock = WriteLock(self.db)

    def wedge_one_batch(self) -> None:
        """Hand the writer one batch and wait until it fails on the lock: the writer
        now holds that batch and retries it, so the queue is empty and has exactly
        QUEUE places left."""
        for seq in range(BATCH):
            assert self.spend(seq=1000 + seq) == 1000 + seq
        wait_until(lambda: "locked" in (self.svc.stats().last_error or ""), what="lock error")

    def release_and_flush(self) -> None:
        self.lock.release()
        self.svc.flush(timeout=30)

    def close(self) -> None:
        self.lock.release()
        self.svc.close()

    def assert_all_accepted_written(self) -> None:
        stats = self.svc.stats()
        assert stats.pending == 0
        assert stats.accepted == stats.written
        assert stats.last_error is None
        assert stats.lost == 0

    def gap_rows(self) -> list[dict[str, Any]]:
        return rows(self.db, "WHERE tool_name = ?", (GAP_TOOL_NAME,))


@pytest.fixture
def stall_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Stall] = []

    def make(**settings: Any) -> Stall:
        stall = Stall(tmp_path, **settings)
        made.append(stall)
        return stall

    yield make
    for stall in made:
        stall.close()


def assert_gap_rows_account_for_drops(stall: Stall) -> None:
    gaps = stall.gap_rows()
    assert gaps, "the trail does not show that entries were dropped"
    for gap in gaps:
        assert gap["status"] == AuditStatus.FAILURE.value
        params = gap["parameters"]
        assert set(params) == {"dropped", "first_dropped_at", "last_dropped_at", "reason"}
        first = datetime.fromisoformat(params["first_dropped_at"])
        last = datetime.fromisoformat(params["last_dropped_at"])
        assert first.tzinfo is not None
        assert first <= last
        assert params["reason"]
    assert sum(g["parameters"]["dropped"] for g in gaps) == stall.svc.stats().dropped


def test_drop_counts_every_excess_entry_and_marks_the_gap(stall_factory: Any) -> None:
    stall = stall_factory(overflow_policy="drop")
    stall.wedge_one_batch()
    excess = 37
    results = [stall.spend(seq=i) for i in range(QUEUE + excess)]
    assert results == list(range(QUEUE + excess))  # tool results unchanged
    assert stall.ran[-(QUEUE + excess) :] == list(range(QUEUE + excess))  # the tool always ran
    stats = stall.svc.stats()
    assert stats.dropped == excess
    assert stats.pending == QUEUE + BATCH

    stall.release_and_flush()
    stall.assert_all_accepted_written()
    assert stall.svc.stats().dropped == excess
    written = {r["parameters"]["seq"] for r in rows(stall.db, "WHERE tool_name = 'spend'")}
    # The queue kept the oldest entries; the newest were dropped (and counted).
    assert written == {-1, *range(1000, 1000 + BATCH), *range(QUEUE)}
    stall.svc.flush()
    assert_gap_rows_account_for_drops(stall)


def test_gap_row_is_on_disk_once_flush_returns(stall_factory: Any) -> None:
    # A long flush interval keeps the writer from coming back on its own.
    stall = stall_factory(overflow_policy="drop", flush_interval=60)
    stall.wedge_one_batch()
    for i in range(QUEUE + 5):
        stall.spend(seq=i)
    assert stall.svc.stats().dropped == 5
    stall.release_and_flush()
    assert sum(g["parameters"]["dropped"] for g in stall.gap_rows()) == 5


@pytest.mark.asyncio
async def test_raise_policy_raises_after_the_tool_ran(stall_factory: Any) -> None:
    stall = stall_factory(overflow_policy="raise")
    stall.wedge_one_batch()
    for i in range(QUEUE):
        assert stall.spend(seq=i) == i
    with pytest.raises(AuditQueueFullError, match="full") as sync_raised:
        stall.spend(seq=777)
    with pytest.raises(AuditQueueFullError, match="full") as async_raised:
        await stall.aspend(seq=778)
    assert isinstance(sync_raised.value, RuntimeError)
    assert isinstance(async_raised.value, RuntimeError)
    assert stall.ran[-2:] == [777, 778]  # the tools did run; the audit refused them
    assert stall.svc.stats().dropped == 2

    stall.release_and_flush()
    stall.assert_all_accepted_written()
    stall.svc.flush()
    assert_gap_rows_account_for_drops(stall)


def fill_to_the_brim(stall: Stall, calls: int) -> threading.Thread:
    """A worker thread making ``calls`` calls against the stalled writer; returns once
    the queue is full (the writer holds a batch and QUEUE more wait behind it)."""
    results: list[int] = []

    def produce() -> None:
        results.extend(stall.spend(seq=i) for i in range(calls))

    worker = threading.Thread(target=produce, daemon=True)
    worker.results = results  # type: ignore[attr-defined]
    worker.start()
    wait_until(
        lambda: stall.svc.stats().pending == QUEUE + BATCH or not worker.is_alive(),
        what="a full queue",
    )
    assert stall.svc.stats().pending == QUEUE + BATCH, stall.svc.stats()
    return worker


def test_block_policy_holds_thread_callers_until_there_is_room(stall_factory: Any) -> None:
    # A long busy timeout: the writer waits inside SQLite, with no error yet (a slow
    # disk, not a broken one), so callers get backpressure rather than drops.
    stall = stall_factory(overflow_policy="block", busy_timeout=60, block_timeout=60)
    worker = fill_to_the_brim(stall, calls=QUEUE + BATCH + 40)
    assert worker.is_alive(), "the caller went on although the queue was full"
    assert stall.svc.stats().dropped == 0
    stall.release_and_flush()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert worker.results == list(range(QUEUE + BATCH + 40))  # type: ignore[attr-defined]
    stall.svc.flush()
    stall.assert_all_accepted_written()
    assert stall.svc.stats().dropped == 0
    assert stall.gap_rows() == []


def test_block_policy_drops_after_block_timeout(stall_factory: Any) -> None:
    stall = stall_factory(overflow_policy="block", busy_timeout=60, block_timeout=0.1)
    worker = fill_to_the_brim(stall, calls=QUEUE + BATCH)
    worker.join(timeout=30)
    assert stall.spend(seq=999) == 999  # waited up to block_timeout, then went on
    assert stall.svc.stats().dropped == 1
    stall.release_and_flush()
    stall.assert_all_accepted_written()
    stall.svc.flush()
    assert_gap_rows_account_for_drops(stall)


@pytest.mark.asyncio
async def test_block_policy_never_blocks_the_event_loop(stall_factory: Any) -> None:
    stall = stall_factory(overflow_policy="block", busy_timeout=60, block_timeout=60)
    calls = QUEUE + BATCH + 20

    async def produce() -> list[int]:
        return [await stall.aspend(seq=i) for i in range(calls)]

    producer = asyncio.create_task(produce())
    deadline = time.monotonic() + 20
    while stall.svc.stats().pending < QUEUE + BATCH:  # a bounded poll for a full queue
        assert time.monotonic() < deadline, f"the queue never filled: {stall.svc.stats()}"
        assert not producer.done(), f"the caller did not wait for room: {stall.svc.stats()}"
        await asyncio.sleep(0.001)
    # The producer now waits for room. Other tasks on the same loop must keep running.
    ticks = 0
    while ticks < 500:
        await asyncio.sleep(0)
        ticks += 1
    assert not producer.done(), "the async caller did not wait for room"
    assert stall.svc.stats().dropped == 0
    stall.lock.release()
    assert await asyncio.wait_for(producer, 30) == list(range(calls))
    await stall.svc.aflush()
    stall.assert_all_accepted_written()
    assert stall.svc.stats().dropped == 0


def test_drop_warning_is_logged_once_per_interval(
    stall_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    stall = stall_factory(overflow_policy="drop")
    stall.wedge_one_batch()
    for i in range(QUEUE + 1000):
        stall.spend(seq=i)
    assert stall.svc.stats().dropped == 1000
    about_drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(about_drops) == 1, [r.getMessage() for r in about_drops]
    assert about_drops[0].levelno == logging.WARNING
    assert about_drops[0].name == "finops_audit"
