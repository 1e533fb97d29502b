"""Entries reach the database from every place MCP servers run tools."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import Counter
from pathlib import Path

import pytest

import finops_audit
from finops_audit import AuditService, AuditStatus, audit_tool, audit_tool_sync
from tests.helpers import disk_count, disk_rows

THREADS = 8
PER_THREAD = 250


def _has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _assert_complete(rows: list[dict], tool: str, workers: int, per_worker: int) -> None:
    mine = [r for r in rows if r["tool_name"] == tool]
    assert len(mine) == workers * per_worker
    assert len({r["id"] for r in mine}) == len(mine), "duplicate ids"
    by_worker = Counter(r["parameters"]["worker"] for r in mine)
    assert by_worker == dict.fromkeys(range(workers), per_worker)
    for w in range(workers):
        seqs = sorted(r["parameters"]["seq"] for r in mine if r["parameters"]["worker"] == w)
        assert seqs == list(range(per_worker)), f"worker {w} lost or duplicated calls"


def test_async_tools_on_a_running_loop(svc: AuditService, db_path: Path) -> None:
    @audit_tool(service=svc)
    async def check_tag_compliance(worker: int, seq: int) -> int:
        await asyncio.sleep(0)
        return seq

    async def main() -> list[int]:
        return await asyncio.gather(
            *(check_tag_compliance(worker=w, seq=s) for w in range(4) for s in range(100))
        )

    assert sorted(asyncio.run(main())) == sorted(list(range(100)) * 4)
    svc.flush()
    _assert_complete(disk_rows(db_path), "check_tag_compliance", 4, 100)


def test_sync_tools_on_the_loops_thread(svc: AuditService, db_path: Path) -> None:
    seen_loop = []

    @audit_tool_sync(service=svc)
    def list_policies(worker: int, seq: int) -> int:
        seen_loop.append(_has_running_loop())
        return seq

    async def main() -> None:
        for s in range(200):
            assert list_policies(worker=0, seq=s) == s
            if s % 50 == 0:
                await asyncio.sleep(0)

    asyncio.run(main())
    assert all(seen_loop)  # the setting under test: called on the loop's own thread
    svc.flush()
    _assert_complete(disk_rows(db_path), "list_policies", 1, 200)


def test_sync_tools_from_many_worker_threads_without_a_loop(
    svc: AuditService, db_path: Path
) -> None:
    barrier = threading.Barrier(THREADS)
    loops_seen = []
    threads_seen = set()

    @audit_tool_sync(service=svc)
    def estimate_cost(worker: int, seq: int) -> int:
        loops_seen.append(_has_running_loop())
        threads_seen.add(threading.get_ident())
        return worker * 1000 + seq

    def work(worker: int) -> list[int]:
        barrier.wait(timeout=10)
        return [estimate_cost(worker, seq=s) for s in range(PER_THREAD)]

    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(work, range(THREADS)))
    assert results == [[w * 1000 + s for s in range(PER_THREAD)] for w in range(THREADS)]
    assert not any(loops_seen)
    assert len(threads_seen) == THREADS

    svc.flush()
    _assert_complete(disk_rows(db_path), "estimate_cost", THREADS, PER_THREAD)
    stats = svc.stats()
    assert stats.accepted == stats.written == THREADS * PER_THREAD
    assert stats.dropped == 0
    # and the service's own reader agrees
    assert len(svc.get_logs(tool_name="estimate_cost", limit=10_000)) == THREADS * PER_THREAD


def test_failures_from_many_threads_are_all_recorded(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def flaky(worker: int, seq: int) -> int:
        if seq % 2:
            raise ValueError(f"odd {worker}/{seq}")
        return seq

    def work(worker: int) -> int:
        failures = 0
        for s in range(50):
            try:
                flaky(worker, s)
            except ValueError:
                failures += 1
        return failures

    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        assert sum(pool.map(work, range(THREADS))) == THREADS * 25
    failed = svc.get_logs(status=AuditStatus.FAILURE, limit=10_000)
    assert len(failed) == THREADS * 25
    assert {e.error_message for e in failed} == {
        f"ValueError: odd {w}/{s}" for w in range(THREADS) for s in range(1, 50, 2)
    }


@pytest.mark.asyncio
async def test_sync_tools_through_to_thread_and_run_in_executor(
    svc: AuditService, db_path: Path
) -> None:
    @audit_tool_sync(service=svc)
    def get_tag_policy(worker: int, seq: int) -> bool:
        return _has_running_loop()

    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        via_executor = [
            loop.run_in_executor(pool, lambda w=w, s=s: get_tag_policy(w, seq=s))
            for w in range(THREADS)
            for s in range(50)
        ]
        via_to_thread = [
            asyncio.to_thread(get_tag_policy, worker=THREADS + w, seq=s)
            for w in range(THREADS)
            for s in range(50)
        ]
        results = await asyncio.gather(*via_executor, *via_to_thread)
    assert not any(results)  # no loop in the worker threads
    await svc.aflush()
    _assert_complete(disk_rows(db_path), "get_tag_policy", 2 * THREADS, 50)


@pytest.mark.asyncio
async def test_async_and_threaded_sync_tools_together(svc: AuditService, db_path: Path) -> None:
    @audit_tool(service=svc)
    async def async_tool(worker: int, seq: int) -> None:
        await asyncio.sleep(0)

    @audit_tool_sync(service=svc)
    def sync_tool(worker: int, seq: int) -> None:
        return None

    def thread_work(worker: int) -> None:
        for s in range(100):
            sync_tool(worker, s)

    threads = [asyncio.to_thread(thread_work, w) for w in range(THREADS)]
    calls = [async_tool(w, s) for w in range(4) for s in range(100)]
    await asyncio.gather(*threads, *calls)
    await svc.aflush()
    rows = disk_rows(db_path)
    _assert_complete(rows, "sync_tool", THREADS, 100)
    _assert_complete(rows, "async_tool", 4, 100)


def test_first_use_of_the_default_service_from_many_threads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "default.db"
    monkeypatch.setenv("AUDIT_DB_PATH", str(target))
    barrier = threading.Barrier(THREADS)

    @audit_tool_sync
    def list_policies(worker: int, seq: int) -> None:
        return None

    def work(worker: int) -> None:
        barrier.wait(timeout=10)
        for s in range(100):
            list_policies(worker, s)

    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(work, range(THREADS)))
    finops_audit.get_default_service().flush()
    _assert_complete(disk_rows(target), "list_policies", THREADS, 100)


# --------------------------------------------------------------------------- read-your-writes


def test_get_logs_sees_a_call_as_soon_as_it_returns(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def tool(seq: int) -> int:
        return seq

    for s in range(25):
        tool(s)
        [latest] = svc.get_logs(limit=1)  # no flush() in between
        assert latest.parameters == {"seq": s}


@pytest.mark.asyncio
async def test_aget_logs_sees_a_call_as_soon_as_it_returns(svc: AuditService) -> None:
    @audit_tool(service=svc)
    async def tool(seq: int) -> int:
        return seq

    for s in range(25):
        await tool(s)
        [latest] = await svc.aget_logs(limit=1)
        assert latest.parameters == {"seq": s}
    assert len(await svc.aget_logs()) == 25


def test_get_logs_sees_calls_made_in_other_threads(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def tool(worker: int) -> None:
        return None

    threads = [threading.Thread(target=tool, args=(w,)) for w in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.parameters["worker"] for e in svc.get_logs()) == list(range(THREADS))


def test_flush_puts_everything_on_disk(svc: AuditService, db_path: Path) -> None:
    @audit_tool_sync(service=svc)
    def tool(seq: int) -> None:
        return None

    for s in range(1500):
        tool(s)
    svc.flush()
    assert disk_count(db_path) == 1500
    stats = svc.stats()
    assert stats.accepted == stats.written == 1500
    assert stats.pending == 0


@pytest.mark.asyncio
async def test_aflush_puts_everything_on_disk(svc: AuditService, db_path: Path) -> None:
    @audit_tool(service=svc)
    async def tool(seq: int) -> None:
        return None

    for s in range(300):
        await tool(s)
    await svc.aflush()
    assert disk_count(db_path) == 300
