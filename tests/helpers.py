"""Helpers the tests share: independent reads of the database, bounded polls, scripts."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: A stand-in for ``mcp.server.fastmcp.Context``: same name, same module.
Context = types.new_class("Context")
Context.__module__ = "mcp.server.fastmcp"


def disk_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of the file, read through a fresh plain ``sqlite3`` connection."""
    conn = sqlite3.connect(path)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM audit_logs ORDER BY id").fetchall()
    finally:
        conn.close()
    out = []
    for row in rows:
        item = dict(row)
        item["parameters"] = json.loads(item["parameters"])
        out.append(item)
    return out


def disk_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0])
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Bounded poll: return as soon as ``predicate()`` holds, fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(0.005)


def run_script(
    tmp_path: Path, source: str, env: dict[str, str], name: str = "script.py"
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter (this venv's), cwd ``tmp_path``."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class WriteLock:
    """Hold SQLite's write lock on ``path`` from another connection (``BEGIN IMMEDIATE``),
    so the service's writer cannot commit until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        self._conn.execute("BEGIN IMMEDIATE")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._conn.execute("ROLLBACK")
            self._conn.close()

    def __enter__(self) -> WriteLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
