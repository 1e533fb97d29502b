"""Helpers for the operations tests: exact rows through plain sqlite3, raw file bytes, the CLI."""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

#: A fixed start for rows inserted by hand: a whole hour, long past.
T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)

#: Columns whose values the chain covers, in the order the writer hashes them.
CHAINED_COLUMNS = (
    "timestamp",
    "tool_name",
    "parameters",
    "status",
    "error_message",
    "execution_time_ms",
    "user",
    "client_name",
    "client_version",
    "session_id",
    "request_id",
    "auth_client_id",
    "trace_id",
    "span_id",
    "labels",
)


def stamp(value: datetime) -> str:
    """The stored text of a time: fixed-width ISO-8601 in UTC."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def insert_rows(path: Path, rows: Iterable[Sequence[Any]]) -> None:
    """Insert ``(seconds after T0, tool, ms, error or None)`` rows with plain sqlite3.

    Only for trails created with ``hash_chain=False``: these rows carry no hash.
    """
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO audit_logs (timestamp, tool_name, parameters, status, "
                "error_message, execution_time_ms) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        stamp(at(seconds)),
                        tool,
                        json.dumps({"n": i}),
                        "SUCCESS" if error is None else "FAILURE",
                        error,
                        ms,
                    )
                    for i, (seconds, tool, ms, error) in enumerate(rows)
                ],
            )
    finally:
        conn.close()


def execute(path: Path, *statements: tuple[str, Sequence[Any]] | str) -> None:
    """Run statements on the file with a plain sqlite3 connection, in one transaction."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            for statement in statements:
                if isinstance(statement, str):
                    conn.execute(statement)
                else:
                    conn.execute(*statement)
    finally:
        conn.close()


def companions(path: Path) -> list[Path]:
    """The database file and whichever of its -wal and -shm files exist."""
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def raw_bytes(path: Path) -> bytes:
    """Every byte of the database, its WAL and shared-memory file, concatenated."""
    return b"".join(p.read_bytes() for p in companions(path))


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def cli_env(**extra: str) -> dict[str, str]:
    """The process environment without AUDIT_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUDIT_")}
    env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a real process: ``python -m finops_audit.cli`` or the console script."""
    if script:
        command = [str(Path(sys.executable).with_name("finops-audit"))]
    else:
        command = [sys.executable, "-m", "finops_audit.cli"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=env if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class LineReader:
    """Collect a pipe's lines on a thread, so the test can wait for them with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def take(self, count: int, timeout: float = 15.0) -> list[str]:
        """The next ``count`` lines; fails if they do not all arrive within ``timeout``."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"only {len(out)} of {count} lines within {timeout}s: {out}"
                ) from None
            if line is None:
                raise AssertionError(f"stream ended after {len(out)} of {count} lines: {out}")
            out.append(line)
        return out

    def rest(self, timeout: float = 15.0) -> list[str]:
        """Every remaining line, once the stream has ended."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"
        out = []
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                out.append(line)
        return out


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text
