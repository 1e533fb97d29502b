"""Real interpreters: entries written by programs that never close anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import disk_rows, run_script


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """This process's environment (already free of AUDIT_*) plus the trail's path."""
    return {**os.environ, "AUDIT_DB_PATH": str(tmp_path / "trail" / "audit.db")}


def _rows(tmp_path: Path) -> list[dict]:
    return disk_rows(tmp_path / "trail" / "audit.db")


def test_plain_script_without_a_loop_writes_everything_at_exit(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = run_script(
        tmp_path,
        """
        import asyncio
        from finops_audit import audit_tool_sync

        @audit_tool_sync
        def list_policies(region: str) -> list[str]:
            return [region]

        @audit_tool_sync(name="cost.estimate")
        def estimate(account: str) -> float:
            if account == "bad":
                raise ValueError("bad account")
            return 1.0

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise SystemExit("a loop is running")
        for i in range(500):
            list_policies(f"region-{i}")
        for account in ("a", "bad", "c"):
            try:
                estimate(account)
            except ValueError:
                pass
        # no close(), no flush(): the interpreter simply ends
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    rows = _rows(tmp_path)
    regions = [r["parameters"]["region"] for r in rows if r["tool_name"] == "list_policies"]
    assert sorted(regions) == sorted(f"region-{i}" for i in range(500))
    estimates = [r for r in rows if r["tool_name"] == "cost.estimate"]
    assert [(r["parameters"]["account"], r["status"]) for r in estimates] == [
        ("a", "SUCCESS"),
        ("bad", "FAILURE"),
        ("c", "SUCCESS"),
    ]
    assert estimates[1]["error_message"] == "ValueError: bad account"


def test_asyncio_run_script_without_close_writes_everything(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = run_script(
        tmp_path,
        """
        import asyncio
        from finops_audit import audit_tool, audit_tool_sync

        @audit_tool
        async def check_tag_compliance(resource_types: list[str], severity: str = "all"):
            await asyncio.sleep(0)
            return {"ok": True}

        @audit_tool_sync
        def get_tag_policy(name: str) -> dict:
            return {}

        async def main() -> None:
            await asyncio.gather(
                *(check_tag_compliance([f"type-{i}"], severity="high") for i in range(300))
            )
            await asyncio.gather(*(asyncio.to_thread(get_tag_policy, f"p{i}") for i in range(50)))
            for i in range(50):
                get_tag_policy(f"loop{i}")

        asyncio.run(main())
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    rows = _rows(tmp_path)
    checks = [r for r in rows if r["tool_name"] == "check_tag_compliance"]
    assert sorted(r["parameters"]["resource_types"][0] for r in checks) == sorted(
        f"type-{i}" for i in range(300)
    )
    assert all(r["parameters"]["severity"] == "high" for r in checks)
    policies = {r["parameters"]["name"] for r in rows if r["tool_name"] == "get_tag_policy"}
    assert policies == {f"p{i}" for i in range(50)} | {f"loop{i}" for i in range(50)}


def test_tool_calls_cancelled_by_asyncio_run_at_exit_are_recorded(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # The stdio-server shape: at stdin EOF the host returns from main() and
    # asyncio.run cancels every pending task, mid-call.
    result = run_script(
        tmp_path,
        """
        import asyncio
        from finops_audit import audit_tool

        @audit_tool
        async def long_scan(account: str) -> None:
            started.append(account)
            await asyncio.Event().wait()

        started = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            pending.extend(loop.create_task(long_scan(f"acct-{i}")) for i in range(20))
            while len(started) < 20:
                await asyncio.sleep(0)

        pending = []

        asyncio.run(main())
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    rows = _rows(tmp_path)
    assert sorted(r["parameters"]["account"] for r in rows) == sorted(
        f"acct-{i}" for i in range(20)
    )
    assert {r["status"] for r in rows} == {"FAILURE"}
    assert all(r["error_message"].startswith("CancelledError") for r in rows)


def test_script_dying_of_an_unhandled_exception_keeps_its_entries(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = run_script(
        tmp_path,
        """
        from finops_audit import audit_tool_sync

        @audit_tool_sync
        def tag(resource: str) -> None:
            return None

        for i in range(200):
            tag(f"r{i}")
        raise RuntimeError("the host crashed")
        """,
        env,
    )
    assert result.returncode == 1
    assert "RuntimeError: the host crashed" in result.stderr
    assert result.stdout == ""
    assert sorted(r["parameters"]["resource"] for r in _rows(tmp_path)) == sorted(
        f"r{i}" for i in range(200)
    )


def test_worker_threads_in_a_script_without_a_loop(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_script(
        tmp_path,
        """
        from concurrent.futures import ThreadPoolExecutor
        from finops_audit import audit_tool_sync

        @audit_tool_sync
        def estimate(worker: int, seq: int) -> None:
            return None

        def work(worker: int) -> None:
            for seq in range(100):
                estimate(worker, seq)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    got = sorted((r["parameters"]["worker"], r["parameters"]["seq"]) for r in _rows(tmp_path))
    assert got == [(w, s) for w in range(8) for s in range(100)]


def test_relative_default_path_lands_in_the_working_directory(tmp_path: Path) -> None:
    env = dict(os.environ)  # no AUDIT_DB_PATH at all
    result = run_script(
        tmp_path,
        """
        from finops_audit import audit_tool_sync

        @audit_tool_sync
        def ping() -> str:
            return "pong"

        ping()
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert [r["tool_name"] for r in disk_rows(tmp_path / "audit_logs.db")] == ["ping"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_flushes_pending_entries(tmp_path: Path, env: dict[str, str]) -> None:
    # MCP clients stop stdio servers with SIGTERM; the default disposition
    # would kill the process without atexit. Long flush interval: nothing is
    # written on its own before the signal.
    env = {**env, "AUDIT_FLUSH_INTERVAL": "60"}
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, threading
            from finops_audit import audit_tool_sync

            @audit_tool_sync
            def tag(resource: str) -> None:
                return None

            for i in range(100):
                tag(f"r{i}")
            sys.stderr.write("ready\\n")
            sys.stderr.flush()
            threading.Event().wait()
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGTERM  # it still dies of the signal
    assert stdout == ""
    assert sorted(r["parameters"]["resource"] for r in _rows(tmp_path)) == sorted(
        f"r{i}" for i in range(100)
    )


def test_two_processes_share_one_database(tmp_path: Path, env: dict[str, str]) -> None:
    source = """
        import sys
        from finops_audit import audit_tool_sync

        @audit_tool_sync
        def tag(proc: str, seq: int) -> None:
            return None

        for seq in range(500):
            tag(sys.argv[1], seq)
        """
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(source))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), name],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out == ""
    got = sorted((r["parameters"]["proc"], r["parameters"]["seq"]) for r in _rows(tmp_path))
    assert got == [(p, s) for p in ("a", "b") for s in range(500)]
