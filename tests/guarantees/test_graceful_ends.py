"""Guarantee 1: graceful ends lose nothing.

Every entry whose call has returned is on disk after ``close()``/``aclose()``,
a normal interpreter exit, an asyncio server ending at stdin EOF (pending
tasks cancelled), SIGTERM and SIGINT; on a signal the process ends exactly as
it would without the library (same status, the host's own handlers still run).

Each child runs with ``AUDIT_FLUSH_INTERVAL=60`` and a batch larger than all its
calls, so no timer or full batch writes anything: rows reach the disk only
through the mechanism under test.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.guarantees._support import (
    child_env,
    finish,
    read_line,
    rows,
    run,
    spawn,
    write_script,
)

N = 150  # calls of each tool per child

#: Settings that keep every entry pending until a flush, a close or an exit drains it.
HOLD = {"flush_interval": 60, "batch_size": 10_000}

TOOLS = """
import asyncio, os, signal, sys, time
from pathlib import Path

from finops_audit import audit_tool, audit_tool_sync

@audit_tool
async def fetch_costs(account: str, seq: int) -> int:
    await asyncio.sleep(0)
    return seq

@audit_tool_sync
def list_policies(region: str, seq: int) -> int:
    return seq

async def _async_calls(n):
    for i in range(n):
        assert await fetch_costs(account="acct", seq=i) == i

def make_calls(n):
    for i in range(n):
        assert list_policies(region="eu-west-1", seq=i) == i
    asyncio.run(_async_calls(n))
"""


def expected(n: int = N) -> set[tuple[str, int]]:
    return {(tool, i) for tool in ("fetch_costs", "list_policies") for i in range(n)}


def recorded(db: Path) -> list[tuple[str, int]]:
    return [(r["tool_name"], r["parameters"]["seq"]) for r in rows(db)]


def assert_all_rows(db: Path, n: int = N) -> None:
    found = recorded(db)
    assert len(found) == len(set(found)), "some entries were written twice"
    assert set(found) == expected(n), f"missing: {sorted(expected(n) - set(found))[:10]}"


def test_normal_exit_without_close(tmp_path: Path) -> None:
    """Bare decorators, the default service from AUDIT_DB_PATH, no close(): the exit hook drains."""
    db = tmp_path / "trail" / "audit.db"
    script = write_script(tmp_path, TOOLS + "\nmake_calls(int(sys.argv[1]))\n")
    done = run(script, child_env(db_path=db, **HOLD), str(N))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", "the library must never write to stdout"
    assert_all_rows(db)


@pytest.mark.parametrize("how", ["close", "aclose", "with", "async with"])
def test_close_writes_everything_before_it_returns(tmp_path: Path, how: str) -> None:
    """After close()/aclose() returns the rows are there: the child then dies with
    os._exit, which skips every exit hook, so only the close can have written them."""
    db = tmp_path / "audit.db"
    source = f"""
        import asyncio, os, sys
        from finops_audit import AuditService, audit_tool, audit_tool_sync

        HOW = {how!r}
        N = int(sys.argv[1])

        def tools(svc):
            @audit_tool(service=svc)
            async def fetch_costs(account: str, seq: int) -> int:
                return seq

            @audit_tool_sync(service=svc)
            def list_policies(region: str, seq: int) -> int:
                return seq

            return fetch_costs, list_policies

        async def calls(svc):
            fetch_costs, list_policies = tools(svc)
            for i in range(N):
                list_policies(region="eu", seq=i)
                await fetch_costs(account="a", seq=i)

        async def main():
            if HOW == "aclose":
                svc = AuditService(sys.argv[2], flush_interval=60, batch_size=10_000)
                await calls(svc)
                await svc.aclose()
            else:
                async with AuditService(sys.argv[2], flush_interval=60, batch_size=10_000) as svc:
                    await calls(svc)
            os._exit(0)

        if HOW == "close":
            svc = AuditService(sys.argv[2], flush_interval=60, batch_size=10_000)
            asyncio.run(calls(svc))
            svc.close()
            svc.close()  # safe twice
            os._exit(0)
        elif HOW == "with":
            with AuditService(sys.argv[2], flush_interval=60, batch_size=10_000) as svc:
                asyncio.run(calls(svc))
            os._exit(0)
        else:
            asyncio.run(main())
    """
    done = run(write_script(tmp_path, source), child_env(), str(N), str(db))
    assert done.returncode == 0, done.stderr
    assert_all_rows(db)


STDIO_SERVER = (
    TOOLS
    + """
@audit_tool
async def long_report(seq: int) -> int:
    await asyncio.sleep(3600)  # still running when the client hangs up
    return seq

async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    background = asyncio.create_task(asyncio.sleep(3600))  # e.g. a session's keep-alive
    slow = None
    while True:
        line = await reader.readline()
        if not line:  # stdin EOF: the client closed the session
            break
        seq = int(line)
        await fetch_costs(account="acct", seq=seq)  # async tool on the loop
        await asyncio.to_thread(list_policies, region="eu", seq=seq)  # sync tool, worker thread
        if slow is None:
            slow = asyncio.create_task(long_report(seq=seq))
        sys.stdout.write(f"ok {seq}\\n")
    # Return with `background` and `slow` pending: asyncio.run cancels them.

asyncio.run(main())
"""
)


def test_stdio_server_ends_at_stdin_eof_with_tasks_pending(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    proc = spawn(
        write_script(tmp_path, STDIO_SERVER), child_env(db_path=db, **HOLD), stdin=subprocess.PIPE
    )
    # Write every request, then close stdin: the client hangs up.
    status, out, err = finish(proc, stdin="".join(f"{i}\n" for i in range(N)))
    assert status == 0, err
    assert out.splitlines() == [f"ok {i}" for i in range(N)]
    found = rows(db)
    cancelled = [r for r in found if r["tool_name"] == "long_report"]
    assert [(r["status"], r["parameters"]) for r in cancelled] == [("FAILURE", {"seq": 0})]
    assert cancelled[0]["error_message"].startswith("CancelledError")
    assert_all_rows_except(db, {"long_report"})


def assert_all_rows_except(db: Path, skip: set[str]) -> None:
    found = [(t, s) for t, s in recorded(db) if t not in skip]
    assert len(found) == len(set(found))
    assert set(found) == expected()


IDLE_AFTER_CALLS = """
make_calls(int(sys.argv[1]))
print("ready", flush=True)
time.sleep(60)  # idle, as a server between requests, until a signal ends us
sys.exit(99)
"""


def signal_child(tmp_path: Path, env: dict[str, str], signum: int, prelude: str = "") -> int:
    """Run the idle child, send ``signum`` once it is ready, return its exit status."""
    script = write_script(tmp_path, prelude + TOOLS + IDLE_AFTER_CALLS, name="idle.py")
    proc = spawn(script, env, str(N))
    assert read_line(proc) == "ready"
    proc.send_signal(signum)
    status, out, err = finish(proc)
    assert out == "", f"the library must never write to stdout; stderr:\n{err}"
    return status


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_flushes_and_the_process_ends_as_without_the_library(
    tmp_path: Path, signum: signal.Signals
) -> None:
    db = tmp_path / "audit.db"
    baseline = signal_child(tmp_path, child_env(db_path=db, logging_enabled="false"), signum)
    assert not db.exists()
    status = signal_child(tmp_path, child_env(db_path=db, **HOLD), signum)
    assert status == baseline
    if signum == signal.SIGTERM:
        assert status == -signal.SIGTERM  # killed by the signal: no atexit, no finally
    assert_all_rows(db)


HOST_HANDLER = """
import signal, sys
from pathlib import Path

def _host_sigterm(signum, frame):
    Path("host_handler_ran").write_text(str(signum))
    sys.exit(3)
"""


@pytest.mark.parametrize("when", ["before import", "after decoration"])
def test_host_sigterm_handler_still_runs(tmp_path: Path, when: str) -> None:
    db = tmp_path / "audit.db"
    if when == "before import":
        prelude = HOST_HANDLER + "signal.signal(signal.SIGTERM, _host_sigterm)\n"
    else:
        prelude = HOST_HANDLER
    script = prelude + TOOLS
    if when == "after decoration":
        script += "signal.signal(signal.SIGTERM, _host_sigterm)\n"
    script_path = write_script(tmp_path, script + IDLE_AFTER_CALLS)
    proc = spawn(script_path, child_env(db_path=db, **HOLD), str(N))
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGTERM)
    status, _, err = finish(proc)
    assert status == 3, err
    assert (tmp_path / "host_handler_ran").read_text() == str(int(signal.SIGTERM))
    assert_all_rows(db)


ASYNCIO_HOST = """
import asyncio, signal, sys
from pathlib import Path

N = int(sys.argv[1])
DECORATE_IN_LOOP = sys.argv[2] == "in-loop"

def define_tools():
    from finops_audit import audit_tool, audit_tool_sync

    @audit_tool
    async def fetch_costs(account: str, seq: int) -> int:
        return seq

    @audit_tool_sync
    def list_policies(region: str, seq: int) -> int:
        return seq

    return fetch_costs, list_policies

if not DECORATE_IN_LOOP:
    TOOLS = define_tools()

async def main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    fetch_costs, list_policies = define_tools() if DECORATE_IN_LOOP else TOOLS
    for i in range(N):
        await fetch_costs(account="a", seq=i)
        list_policies(region="eu", seq=i)
    print("ready", flush=True)
    await asyncio.wait_for(stop.wait(), 60)
    Path("graceful_shutdown_ran").write_text("yes")

asyncio.run(main())
"""


@pytest.mark.parametrize("where", ["before-loop", "in-loop"])
def test_asyncio_add_signal_handler_shutdown_still_happens(tmp_path: Path, where: str) -> None:
    db = tmp_path / "audit.db"
    proc = spawn(write_script(tmp_path, ASYNCIO_HOST), child_env(db_path=db, **HOLD), str(N), where)
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGTERM)
    status, _, err = finish(proc)
    assert status == 0, err
    assert (tmp_path / "graceful_shutdown_ran").read_text() == "yes"
    assert_all_rows(db)


def test_handle_signals_false_leaves_sigterm_alone(tmp_path: Path) -> None:
    source = (
        TOOLS
        + """
print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
make_calls(3)
print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    )
    done = run(write_script(tmp_path, source), child_env(db_path="a.db", handle_signals="false"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]
    # ... and the default (handle_signals on) does install its flush, or the test above
    # would prove nothing:
    done = run(write_script(tmp_path, source), child_env(db_path="b.db"))
    assert done.stdout.split() == ["False", "False", "False"], done.stderr
