"""Fixtures for the fleet fault tests: a private PostgreSQL server, replica processes, reads.

Each test gets its own server (it stops and starts it), replicas are real
interpreters running ``replica.py`` with a bare environment, and every wait is
a bounded poll or a bounded read of a child's output.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

REPLICA = Path(__file__).with_name("replica.py")
#: Ceiling for any one child's phase; a hang fails the test, never the suite.
CHILD_TIMEOUT = 90.0
_REQUIRE_PG = bool(os.environ.get("CI") or os.environ.get("FINOPS_REQUIRE_PG"))


@pytest.fixture
def server() -> Iterator[Any]:
    """A private PostgreSQL server for one test, removed afterwards."""
    from finops_audit._pgserver import find_pg_bin, temporary_postgres

    if find_pg_bin() is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found"
        if _REQUIRE_PG:
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    with temporary_postgres() as srv:
        yield srv


class Replica:
    """A running ``replica.py``; its stdout lines are JSON events read by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):  # closed under us at teardown
            for line in self.proc.stdout:
                with contextlib.suppress(ValueError):
                    self.events.put(json.loads(line))
        self.events.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            self.stderr.extend(self.proc.stderr)

    def next(self, event: str, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        """The next ``event`` line (earlier lines of other kinds are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.events.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"replica wrote no {event!r} within {timeout}s:\n{self.err()}"
                ) from None
            if item is None:
                self.events.put(None)
                self.proc.wait(timeout=10)
                raise AssertionError(
                    f"replica exited ({self.proc.returncode}) before {event!r}:\n{self.err()}"
                )
            if item["event"] == event:
                return item

    def send(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def summary(self, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        """The final summary; the process must then exit 0."""
        found = self.next("summary", timeout)
        assert self.proc.wait(timeout=30) == 0, self.err()
        return found

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def release(self) -> None:
        """Kill if still running, let the readers reach EOF, close the pipes."""
        self.kill()
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def err(self) -> str:
        return "".join(self.stderr)[-4000:]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    """``spawn(db=..., url=..., calls=..., ...)``: start ``replica.py``; all killed after the test.

    Keyword arguments become options (``max_rate=0`` is ``--max-rate 0``,
    ``probe=True`` is ``--probe``).
    """
    started: list[Replica] = []
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TERM") if k in os.environ}

    def start(**options: Any) -> Replica:
        argv = [sys.executable, str(REPLICA)]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value not in (None, False):
                argv += [flag, str(value)]
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        replica = Replica(proc)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.release()
