"""Durable mode (issue 12 §2): a call returns only after its entry is committed.

Real files, threads, an event loop and subprocesses: every call's row is read
by a *separate* connection right after the call returns; concurrent waiters
share transactions (group commit); a SIGKILL at random points loses no entry
of a call that returned; a dead database is handled by the documented policy
(return and count, or fail closed with ``AuditUnavailableError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from finops_audit import (
    AuditConfigError,
    AuditError,
    AuditService,
    AuditUnavailableError,
    audit_tool,
    audit_tool_sync,
)
from finops_audit.config import load_settings
from tests.guarantees._support import (
    WriteLock,
    child_env,
    count,
    finish,
    read_line,
    spawn,
    write_script,
)


def _has(conn: sqlite3.Connection, tool: str, key: str) -> bool:
    query = "SELECT count(*) FROM audit_logs WHERE tool_name = ? AND parameters ->> '$.key' = ?"
    found = conn.execute(query, (tool, key)).fetchone()[0]
    return bool(found)


@pytest.fixture
def spy_commits() -> Callable[[AuditService], list[int]]:
    """Count the writer's transactions: one ``write_batch`` call each (rows per call)."""

    def install(svc: AuditService) -> list[int]:
        store = svc._writer._store
        original = store.write_batch
        sizes: list[int] = []

        async def counted(rows: Any) -> None:
            await original(rows)
            sizes.append(len(rows))

        store.write_batch = counted  # type: ignore[method-assign]
        return sizes

    return install


def test_concurrent_durable_calls_are_committed_when_they_return_and_share_commits(
    db_path: Path, spy_commits: Callable[[AuditService], list[int]]
) -> None:
    tasks, threads, calls = 64, 16, 15
    with AuditService(db_path=db_path, durability="commit") as svc:

        @audit_tool(service=svc)
        async def a_tool(key: str) -> str:
            await asyncio.sleep(0)
            return key

        @audit_tool_sync(service=svc)
        def s_tool(key: str) -> str:
            return key

        s_tool(key="warm-up")  # the writer runs and the file exists
        sizes = spy_commits(svc)
        missing: list[str] = []

        def thread_caller(t: int) -> None:
            with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:
                for n in range(calls):
                    key = f"t{t}-{n}"
                    assert s_tool(key=key) == key
                    if not _has(conn, "s_tool", key):
                        missing.append(key)

        async def task_caller(conn: sqlite3.Connection, t: int) -> None:
            for n in range(calls):
                key = f"a{t}-{n}"
                assert await a_tool(key=key) == key
                if not _has(conn, "a_tool", key):
                    missing.append(key)

        async def all_tasks() -> None:
            with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:
                await asyncio.gather(*(task_caller(conn, t) for t in range(tasks)))

        workers = [threading.Thread(target=thread_caller, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        asyncio.run(all_tasks())
        for w in workers:
            w.join(timeout=120)
        total = (tasks + threads) * calls
        assert missing == [], f"{len(missing)} calls returned before their row was readable"
        stats = svc.stats()
        assert stats.durable_timeouts == 0
        assert sum(sizes) == total
        # Group commit: far fewer transactions than calls.
        assert len(sizes) <= total / 4, (len(sizes), total)
    assert count(db_path) == total + 1


def test_async_callers_on_several_loops_all_return_committed(db_path: Path) -> None:
    """A batch's async waiters are woken with one callback per loop: callers on
    four loops (four threads) sharing batches each get their own answer."""
    loops, tasks, calls = 4, 8, 10
    missing: list[str] = []
    failures: list[BaseException] = []
    with AuditService(db_path=db_path, durability="commit", fail_closed=True) as svc:

        @audit_tool(service=svc)
        async def a_tool(key: str) -> str:
            return key

        async def task_caller(conn: sqlite3.Connection, lp: int, t: int) -> None:
            for n in range(calls):
                key = f"l{lp}-{t}-{n}"
                assert await a_tool(key=key) == key  # fail-closed: raises if unconfirmed
                if not _has(conn, "a_tool", key):
                    missing.append(key)

        async def one_loop(lp: int) -> None:
            with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:
                await asyncio.gather(*(task_caller(conn, lp, t) for t in range(tasks)))

        def run_loop(lp: int) -> None:
            try:
                asyncio.run(one_loop(lp))
            except BaseException as exc:  # pragma: no cover - fails the test below
                failures.append(exc)

        a_tool_ready = asyncio.run(a_tool(key="warm-up"))
        assert a_tool_ready == "warm-up"
        workers = [threading.Thread(target=run_loop, args=(lp,)) for lp in range(loops)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert failures == []
        assert missing == []
        assert svc.stats().durable_timeouts == 0
    assert count(db_path) == loops * tasks * calls + 1


def test_a_cancelled_async_caller_leaves_its_entry_queued_and_written(db_path: Path) -> None:
    svc = AuditService(db_path=db_path, durability="commit", busy_timeout=0.02, block_timeout=30)

    @audit_tool(service=svc)
    async def a_tool(key: str) -> str:
        return key

    with svc:
        assert asyncio.run(a_tool(key="warm-up")) == "warm-up"  # the file exists
        lock = WriteLock(db_path)

        async def main() -> None:
            waiting = asyncio.create_task(a_tool(key="cancelled"))
            for _ in range(2000):  # bounded poll: the entry is queued, the caller waits
                await asyncio.sleep(0.005)
                if svc.stats().pending >= 1:
                    break
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting

        with lock:
            asyncio.run(main())
        svc.flush(timeout=30)
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            assert _has(conn, "a_tool", "cancelled")
        # The writer and a new loop's callers are unaffected.
        assert asyncio.run(a_tool(key="after")) == "after"
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            assert _has(conn, "a_tool", "after")
        assert svc.stats().durable_timeouts == 0


def test_a_lone_caller_after_a_group_is_not_held_for_the_group(db_path: Path) -> None:
    """The writer waits for a group as large as the last only until a short timer:
    a caller alone after a crowd of 16 still returns committed, well within
    block_timeout (fail-closed would raise otherwise), sync and async alike."""
    with AuditService(
        db_path=db_path, durability="commit", fail_closed=True, block_timeout=5
    ) as svc:

        @audit_tool_sync(service=svc)
        def s_tool(key: str) -> str:
            return key

        @audit_tool(service=svc)
        async def a_tool(key: str) -> str:
            return key

        for rnd in range(3):
            crowd = [
                threading.Thread(target=s_tool, kwargs={"key": f"crowd-{rnd}-{t}"})
                for t in range(16)
            ]
            for w in crowd:
                w.start()
            for w in crowd:
                w.join(timeout=60)
            assert s_tool(key=f"alone-{rnd}") == f"alone-{rnd}"
            assert asyncio.run(a_tool(key=f"async-alone-{rnd}")) == f"async-alone-{rnd}"
            with contextlib.closing(sqlite3.connect(db_path)) as conn:
                assert _has(conn, "s_tool", f"alone-{rnd}")
                assert _has(conn, "a_tool", f"async-alone-{rnd}")
        assert svc.stats().durable_timeouts == 0


def test_async_waiters_time_out_together_and_each_later_one_on_its_own_deadline(
    db_path: Path,
) -> None:
    """One shared timer per loop times out every durable waiter still pending at
    its block_timeout: a crowd at once, then a later caller on its own deadline,
    all under the default policy (the call returns, counted)."""
    svc = AuditService(db_path=db_path, durability="commit", busy_timeout=0.02, block_timeout=0.3)

    @audit_tool(service=svc)
    async def a_tool(key: str) -> str:
        return key

    async def main() -> list[str]:
        first = await asyncio.gather(*(a_tool(key=f"crowd-{n}") for n in range(20)))
        later = await a_tool(key="later")
        return [*first, later]

    with svc:
        assert asyncio.run(a_tool(key="warm-up")) == "warm-up"
        with WriteLock(db_path):
            keys = asyncio.run(main())
            assert keys == [*(f"crowd-{n}" for n in range(20)), "later"]
            assert svc.stats().durable_timeouts == 21
        svc.flush(timeout=30)
    assert count(db_path) == 22  # the timed-out entries were written once the lock went


def test_the_shared_deadline_timer_settles_only_the_overdue_and_then_stops() -> None:
    from finops_audit._deadlines import deadlines_for

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = deadlines_for(loop, 0.05)
        assert deadlines is not None
        assert deadlines_for(loop, 0.05) is deadlines
        settled: asyncio.Future[bool] = loop.create_future()
        overdue: asyncio.Future[bool] = loop.create_future()
        deadlines.add(loop, settled)
        deadlines.add(loop, overdue)
        settled.set_result(True)  # the writer got there first
        assert await overdue is False
        assert settled.result() is True
        deadlines.prune()
        assert deadlines._handle is None  # no timer left
        assert not deadlines._pending
        # A later waiter re-arms it; one that returns in time leaves nothing behind.
        prompt: asyncio.Future[bool] = loop.create_future()
        deadlines.add(loop, prompt)
        loop.call_soon(prompt.set_result, True)
        assert await prompt is True
        deadlines.prune()
        assert deadlines._handle is None
        assert not deadlines._pending

    asyncio.run(main())


FORK_CHILD = """
import os, sys
from finops_audit import AuditService, audit_tool_sync
from finops_audit import _writer_types

held = _writer_types._settling
held.acquire()  # as if a writer thread were settling its waiters at the fork
pid = os.fork()
if pid == 0:
    code = 0
    try:
        svc = AuditService(db_path=sys.argv[1], durability="commit", fail_closed=True,
                           block_timeout=10)
        s_tool = audit_tool_sync(service=svc)(lambda key: key)
        if s_tool(key="child") != "child":
            code = 3
        svc.close(timeout=30)
    except BaseException as exc:
        print(f"child: {exc!r}", file=sys.stderr)
        code = 2
    os._exit(code)
held.release()
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_fork_while_waiters_are_settled_leaves_the_child_able_to_commit(
    tmp_path: Path,
) -> None:
    script = write_script(tmp_path, FORK_CHILD)
    code, out, err = finish(spawn(script, child_env(), str(tmp_path / "child.db")))
    assert code == 0, err
    assert out.strip() == "0", err
    assert count(tmp_path / "child.db") == 1


DURABLE_CHILD = """
import asyncio, sys, threading
from finops_audit import audit_tool, audit_tool_sync

@audit_tool_sync
def s_tool(key: str) -> str:
    return key

@audit_tool
async def a_tool(key: str) -> str:
    return key

lock = threading.Lock()

def say(key):
    with lock:
        sys.stdout.write(key + "\\n")
        sys.stdout.flush()

def thread_caller(t):
    n = 0
    while True:
        key = f"t{t}-{n}"
        s_tool(key=key)
        say(key)  # only after the call returned
        n += 1

async def task_caller(t):
    n = 0
    while True:
        key = f"a{t}-{n}"
        await a_tool(key=key)
        say(key)
        n += 1

async def main():
    await asyncio.gather(*(task_caller(t) for t in range(8)))

for t in range(4):
    threading.Thread(target=thread_caller, args=(t,), daemon=True).start()
asyncio.run(main())
"""


@pytest.mark.parametrize("run", range(3))
def test_sigkill_at_a_random_point_loses_no_entry_of_a_returned_call(
    tmp_path: Path, run: int
) -> None:
    db = tmp_path / "audit.db"
    proc = spawn(write_script(tmp_path, DURABLE_CHILD), child_env(db_path=db, durability="commit"))
    returned = [read_line(proc) for _ in range(random.randint(20, 400))]
    proc.send_signal(signal.SIGKILL)
    status, rest, err = finish(proc)
    assert status == -signal.SIGKILL, err
    returned += [line for line in rest.splitlines() if line.strip()]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {
            k for (k,) in conn.execute("SELECT json_extract(parameters, '$.key') FROM audit_logs")
        }
    lost = [key for key in returned if key not in stored]
    assert lost == [], f"{len(lost)} of {len(returned)} returned calls are not in the trail"


# ---------------------------------------------------------------------- a dead database


@pytest.fixture
def locked(db_path: Path) -> Iterator[Callable[..., AuditService]]:
    """A durable service whose file another connection holds locked (BEGIN EXCLUSIVE)."""
    made: list[AuditService] = []
    locks: list[sqlite3.Connection] = []

    def make(**settings: Any) -> AuditService:
        svc = AuditService(
            db_path=db_path,
            durability="commit",
            busy_timeout=0.02,
            block_timeout=0.3,
            close_timeout=10,
            **settings,
        )
        made.append(svc)

        @audit_tool_sync(service=svc)
        def warm() -> None:
            return None

        warm()  # the file exists, committed
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        locks.append(conn)
        return svc

    yield make
    for conn in locks:
        conn.execute("ROLLBACK")
        conn.close()
    for svc in made:
        with contextlib.suppress(AuditError):
            svc.close()


def test_default_policy_returns_the_result_counts_and_writes_later(
    locked: Callable[..., AuditService], db_path: Path
) -> None:
    svc = locked()

    @audit_tool_sync(service=svc)
    def quote(x: int) -> int:
        return x * 2

    @audit_tool(service=svc)
    async def aquote(x: int) -> int:
        return x * 3

    @audit_tool_sync(service=svc)
    def broken() -> None:
        raise ValueError("the tool's own error")

    assert quote(x=21) == 42
    assert asyncio.run(aquote(x=2)) == 6
    with pytest.raises(ValueError, match="the tool's own error"):
        broken()
    stats = svc.stats()
    assert stats.durable_timeouts == 3
    assert stats.pending == 3  # not lost: still queued
    assert stats.last_error is not None


def test_default_policy_entries_land_once_the_database_is_back(db_path: Path) -> None:
    svc = AuditService(db_path=db_path, durability="commit", busy_timeout=0.02, block_timeout=0.3)
    with svc:

        @audit_tool_sync(service=svc)
        def quote(x: int) -> int:
            return x * 2

        quote(x=0)
        with WriteLock(db_path):
            assert quote(x=21) == 42
            assert svc.stats().durable_timeouts == 1
        svc.flush()
        assert svc.stats().written == 2
    assert count(db_path) == 2


def test_fail_closed_raises_and_withholds_the_result(
    locked: Callable[..., AuditService],
) -> None:
    svc = locked(fail_closed=True)
    ran: list[int] = []

    @audit_tool_sync(service=svc)
    def quote(x: int) -> int:
        ran.append(x)
        return x * 2

    with pytest.raises(AuditUnavailableError, match="AUDIT_FAIL_CLOSED") as caught:
        quote(x=21)
    assert ran == [21], "the tool ran: the audit records a finished call"
    assert isinstance(caught.value, RuntimeError)
    assert caught.value.__cause__ is None
    assert svc.stats().durable_timeouts == 1


def test_fail_closed_chains_the_tools_own_exception(
    locked: Callable[..., AuditService],
) -> None:
    svc = locked(fail_closed=True)

    @audit_tool_sync(service=svc)
    def broken() -> None:
        raise KeyError("no such account")

    @audit_tool(service=svc)
    async def abroken() -> None:
        raise LookupError("no such region")

    with pytest.raises(AuditUnavailableError) as caught:
        broken()
    assert isinstance(caught.value.__cause__, KeyError)
    with pytest.raises(AuditUnavailableError) as acaught:
        asyncio.run(abroken())
    assert isinstance(acaught.value.__cause__, LookupError)


def test_fail_closed_async_tool_does_not_block_its_loop(
    locked: Callable[..., AuditService],
) -> None:
    svc = locked(fail_closed=True)

    @audit_tool(service=svc)
    async def aquote(x: int) -> int:
        return x

    async def main() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        tick = asyncio.create_task(ticker())
        with pytest.raises(AuditUnavailableError):
            await aquote(x=1)
        stop.set()
        await tick
        return ticks

    assert asyncio.run(main()) > 1, "the loop was blocked while the call waited"


def test_an_unopenable_file_under_both_policies(tmp_path: Path) -> None:
    where = tmp_path / "a-folder.db"
    where.mkdir()  # the "file" is a directory: nothing can be committed
    for fail_closed in (False, True):
        svc = AuditService(
            db_path=where, durability="commit", block_timeout=0.2, fail_closed=fail_closed
        )

        @audit_tool_sync(service=svc)
        def quote(x: int) -> int:
            return x * 2

        if fail_closed:
            with pytest.raises(AuditUnavailableError, match="could not be committed"):
                quote(x=1)
        else:
            assert quote(x=1) == 2
        assert svc.stats().durable_timeouts == 1
        with contextlib.suppress(AuditError):
            svc.close(timeout=2)


def test_after_close_a_durable_call_is_refused_by_policy(db_path: Path) -> None:
    for fail_closed in (False, True):
        svc = AuditService(db_path=db_path, durability="commit", fail_closed=fail_closed)

        @audit_tool_sync(service=svc)
        def quote(x: int) -> int:
            return x * 2

        quote(x=1)
        svc.close()
        if fail_closed:
            with pytest.raises(AuditUnavailableError, match="dropped"):
                quote(x=2)
        else:
            assert quote(x=2) == 4
        stats = svc.stats()
        assert (stats.dropped, stats.durable_timeouts) == (1, 1)


def test_results_and_exceptions_are_unchanged_in_durable_mode(db_path: Path) -> None:
    with AuditService(db_path=db_path, durability="commit") as svc:

        @audit_tool_sync(service=svc)
        def fails() -> None:
            raise ValueError("bad input")

        @audit_tool(service=svc)
        async def value() -> dict[str, int]:
            return {"n": 1}

        with pytest.raises(ValueError, match="bad input"):
            fails()
        assert asyncio.run(value()) == {"n": 1}
        assert count(db_path) == 2  # both committed when the calls ended, no flush
        assert svc.stats().durable_timeouts == 0


def test_durability_from_the_environment(monkeypatch: pytest.MonkeyPatch, db_path: Path) -> None:
    monkeypatch.setenv("AUDIT_DURABILITY", " Commit ")
    monkeypatch.setenv("AUDIT_FAIL_CLOSED", "true")
    monkeypatch.setenv("AUDIT_DB_PATH", str(db_path))
    settings = load_settings()
    assert (settings.durability, settings.fail_closed) == ("commit", True)

    @audit_tool_sync
    def quote(x: int) -> int:
        return x

    assert quote(x=5) == 5
    assert count(db_path) == 1  # committed before the call returned


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("durability", "sometimes"),
        ("durability", "on"),
        ("durability", "fsync"),
        ("fail_closed", "maybe"),
        ("fail_closed", "2"),
    ],
)
def test_bad_durability_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"AUDIT_{name.upper()}", value)
    with pytest.raises(AuditConfigError, match=f"AUDIT_{name.upper()}"):
        load_settings()


def test_bad_durability_argument_is_refused(db_path: Path) -> None:
    with pytest.raises(AuditConfigError, match="durability"):
        AuditService(db_path=db_path, durability="yes")


def test_durable_mode_needs_a_block_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_DURABILITY", "commit")
    monkeypatch.setenv("AUDIT_BLOCK_TIMEOUT", "0")
    with pytest.raises(AuditConfigError, match=r"AUDIT_BLOCK_TIMEOUT.*AUDIT_DURABILITY=commit"):
        load_settings()
    monkeypatch.setenv("AUDIT_DURABILITY", "off")
    assert load_settings().block_timeout == 0  # still fine without durability


def test_stats_right_after_a_durable_call_show_it_written_not_pending(db_path: Path) -> None:
    """A caller that reads stats() the moment its durable call returns sees it written."""
    with AuditService(db_path=db_path, durability="commit") as svc:

        @audit_tool_sync(service=svc)
        def sync_tool(n: int) -> int:
            return n

        @audit_tool(service=svc)
        async def async_tool(n: int) -> int:
            return n

        async def calls() -> list[tuple[int, int, int]]:
            seen = []
            for n in range(20):
                await async_tool(n=n)
                stats = svc.stats()
                seen.append((stats.accepted, stats.written, stats.pending))
            return seen

        for accepted, written, pending in asyncio.run(calls()):
            assert pending == 0
            assert accepted == written
        for n in range(20):
            sync_tool(n=n)
            stats = svc.stats()
            assert (stats.pending, stats.accepted) == (0, stats.written)
        assert svc.stats().written == 40
