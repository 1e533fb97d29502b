"""Issue 12 §1 and §3: an idle writer sleeps with no timer; a burst is absorbed, not paced.

No timing is asserted: the writer counts its own wake-ups (``_iterations``), and
an idle second must add none; every entry of racing producers lands after
``flush()``; a burst that fits in the queue is admitted whole while the writer
cannot write at all (its database locked), and so nobody was paced.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from finops_audit import AuditConfigError, AuditService, audit_tool, audit_tool_sync
from finops_audit._handoff import pace_limit
from finops_audit.config import AuditSettings, load_settings
from tests.guarantees._support import WriteLock, count, wait_until


def _idle(svc: AuditService) -> bool:
    return bool(svc._writer._idle)


def test_an_idle_writer_has_no_timer(db_path: Path) -> None:
    with AuditService(db_path=db_path, flush_interval=0.01) as svc:

        @audit_tool_sync(service=svc)
        def ping() -> int:
            return 1

        ping()
        svc.flush()
        wait_until(lambda: _idle(svc), what="the writer goes idle")
        before = svc._writer._iterations
        # A hundred flush intervals pass; a timer-driven writer would wake ~100 times.
        time.sleep(1.0)
        assert _idle(svc)
        assert svc._writer._iterations == before, "an idle writer woke up"
        # ... and the first entry wakes it, without any flush.
        ping()
        wait_until(lambda: count(db_path) == 2, what="the entry after idling is written")


def test_first_entry_after_idle_is_written_without_flush_async(db_path: Path) -> None:
    with AuditService(db_path=db_path) as svc:

        @audit_tool(service=svc)
        async def ping() -> int:
            return 1

        asyncio.run(ping())
        svc.flush()  # the writer is started (lazily, at the first call)
        for n in range(2, 7):
            wait_until(lambda: _idle(svc), what="the writer goes idle")
            asyncio.run(ping())
            wait_until(lambda n=n: count(db_path) == n, what=f"entry {n} is written")  # type: ignore[misc]


def test_no_wake_is_lost_when_many_threads_submit_after_idle_periods(db_path: Path) -> None:
    """The lost-wake race: producers append while the writer is going idle."""
    threads, rounds = 16, 30
    with AuditService(db_path=db_path, flush_interval=0.001) as svc:

        @audit_tool_sync(service=svc)
        def one(seq: int) -> int:
            return seq

        one(-1)
        svc.flush()  # the writer is started (lazily, at the first call)
        for r in range(rounds):
            if r % 2 == 0:
                wait_until(lambda: _idle(svc), what="the writer goes idle")
            start = threading.Barrier(threads)

            def call(i: int, r: int = r, start: threading.Barrier = start) -> None:
                start.wait()
                one(r * threads + i)

            workers = [threading.Thread(target=call, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            # Without flush(): each round's entries must land on their own.
            wait_until(
                lambda r=r: count(db_path) == (r + 1) * threads + 1,  # type: ignore[misc]
                what=f"round {r} written without a flush",
            )
        svc.flush()
        stats = svc.stats()
        assert stats.written == threads * rounds + 1
        assert stats.dropped == 0


def test_a_burst_that_fits_the_queue_is_absorbed_even_while_nothing_can_be_written(
    db_path: Path,
) -> None:
    """Default block policy: 20,000 calls are admitted at once, none waits for room."""
    with AuditService(db_path=db_path, busy_timeout=0.05, block_timeout=60) as svc:

        @audit_tool_sync(service=svc)
        def tag(seq: int) -> int:
            return seq

        tag(-1)
        svc.flush()  # the file exists and the writer has measured its throughput
        with WriteLock(db_path):
            for seq in range(20_000):
                tag(seq)
            stats = svc.stats()
            # All were accepted while the database was locked: nobody was held back.
            assert stats.pending >= 20_000 - stats.written
            assert stats.dropped == 0
        svc.flush()
        assert count(db_path) == 20_001


@pytest.mark.parametrize(
    ("behind", "rate", "window", "expected"),
    [
        (0.0, 1_000.0, 1.0, 100_000),  # not behind: the whole queue
        (0.99, 1_000.0, 1.0, 100_000),  # behind, within the window: still absorbed
        (1.0, 1_000.0, 1.0, 2_000),  # past it: a window of writing plus a batch
        (5.0, 50_000.0, 0.5, 26_000),
        (5.0, 1e9, 1.0, 100_000),  # never above the queue
        (5.0, 0.0, 1.0, 1_000),  # never below a batch
    ],
)
def test_callers_are_paced_only_past_the_window(
    behind: float, rate: float, window: float, expected: int
) -> None:
    assert pace_limit(behind, rate, window, 1_000, 100_000) == expected


def test_a_long_overload_is_paced_and_nothing_is_lost(db_path: Path) -> None:
    """A tiny window: pacing starts at once; every call still lands (block policy)."""
    with AuditService(
        db_path=db_path, max_unwritten_seconds=0.001, batch_size=50, queue_size=100_000
    ) as svc:

        @audit_tool_sync(service=svc)
        def tag(seq: int) -> int:
            return seq

        for seq in range(20_000):
            tag(seq)
        svc.flush()
        stats = svc.stats()
        assert (stats.written, stats.dropped, stats.pending) == (20_000, 0, 0)
        assert count(db_path) == 20_000


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "3601", "soon"])
def test_max_unwritten_seconds_refuses_bad_values(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AUDIT_MAX_UNWRITTEN_SECONDS", value)
    with pytest.raises(AuditConfigError, match="AUDIT_MAX_UNWRITTEN_SECONDS"):
        load_settings()


def test_max_unwritten_seconds_default_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AuditSettings().max_unwritten_seconds == 1.0
    monkeypatch.setenv("AUDIT_MAX_UNWRITTEN_SECONDS", "2.5")
    assert AuditSettings().max_unwritten_seconds == 2.5
