"""Helpers for the guarantee tests: child processes, independent reads, locks, mounts.

Everything here observes the library from the outside: rows are read with a
fresh plain ``sqlite3`` connection, children are real interpreters started
with a bare environment (as MCP clients start servers), and waits are bounded
polls on a condition, never a sleep followed by an assertion.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Generous ceiling for any one child process; a hang fails the test, never the suite.
CHILD_TIMEOUT = 60.0


def child_env(**settings: object) -> dict[str, str]:
    """The bare environment an MCP client gives a server, plus ``AUDIT_*`` settings.

    ``child_env(db_path=p, flush_interval=60)`` sets ``AUDIT_DB_PATH`` and
    ``AUDIT_FLUSH_INTERVAL``.
    """
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TERM") if k in os.environ}
    for name, value in settings.items():
        env[f"AUDIT_{name.upper()}"] = str(value)
    return env


def write_script(tmp_path: Path, source: str, name: str = "child.py") -> Path:
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    return script


def spawn(
    script: Path, env: dict[str, str], *args: str, stdin: int | None = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """Start ``script`` in a fresh interpreter of this venv, cwd its folder, text pipes."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=script.parent,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _children.append(proc)
    return proc


_children: list[subprocess.Popen[str]] = []


def reap_children() -> None:
    """Kill and collect every child a test left behind (called after each test)."""
    while _children:
        proc = _children.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )


def read_line(proc: subprocess.Popen[str]) -> str:
    """The child's next stdout line; fails clearly if it ended first."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
        raise AssertionError(f"child exited ({proc.returncode}) before writing a line:\n{stderr}")
    return line.strip()


def finish(proc: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str, str]:
    """Wait for the child (bounded); its return code, remaining stdout and stderr."""
    try:
        out, err = proc.communicate(stdin, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"child did not end within {CHILD_TIMEOUT}s:\n{err}") from None
    return proc.returncode, out, err


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def rows(path: Path, where: str = "", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of the file (ordered by id), parameters decoded, via a fresh connection."""
    with connect(path) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute(f"SELECT * FROM audit_logs {where} ORDER BY id", args).fetchall()
    out = []
    for row in found:
        item = dict(row)
        item["parameters"] = json.loads(item["parameters"])
        out.append(item)
    return out


def count(path: Path, where: str = "", args: tuple[Any, ...] = ()) -> int:
    with connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM audit_logs {where}", args).fetchone()[0])


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Bounded poll: return as soon as ``predicate()`` is truthy, fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or predicate}")
        time.sleep(0.002)


class WriteLock:
    """Hold SQLite's write lock (``BEGIN IMMEDIATE``) on ``path`` from another connection.

    ``release()`` commits; it is idempotent, and leaving the ``with`` block releases too.
    """

    def __init__(self, path: Path) -> None:
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.execute("COMMIT")
            finally:
                conn.close()

    def __enter__(self) -> WriteLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)
