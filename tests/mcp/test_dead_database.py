"""The example server with an unusable ``AUDIT_DB_PATH`` (a folder) stops like a healthy one.

It keeps serving; at stdin EOF it exits by itself before a client's 2 s grace
runs out (clients then send SIGTERM), and at SIGTERM it dies of the signal at
once. Either way the loss is reported in exactly one line with one count, and
no traceback appears. Driven as a client does: newline-delimited JSON-RPC over
the server's stdin/stdout, in a real subprocess with a bare environment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from ._harness import server_args
from .conftest import installed_server_sdks

#: What MCP clients allow between closing stdin and SIGTERM (DESIGN.md).
CLIENT_GRACE = 2.0
LOSS = re.compile(r"(\d+) audit entries could not be written to (\S+?):? ")


def _rpc(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()


def _reply(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the server closed stdout"
    reply: dict[str, Any] = json.loads(line)
    return reply


def _serve(sdk: str, folder: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    """The server on a dead trail, after two successful tool calls."""
    env = {k: os.environ[k] for k in ("HOME", "PATH", "LANG") if k in os.environ}
    env["AUDIT_DB_PATH"] = str(folder)  # a folder: no SQLite file can be opened there
    proc = subprocess.Popen(
        [sys.executable, *server_args(sdk)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    _rpc(
        proc,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "dead-db-client", "version": "1"},
            },
        },
    )
    assert "result" in _reply(proc)
    _rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    for request_id, policy in ((2, "default"), (3, "strict")):
        _rpc(
            proc,
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "method": "tools/call",
                "params": {"name": "get_tag_policy", "arguments": {"policy_name": policy}},
            },
        )
        reply = _reply(proc)
        assert reply["id"] == request_id
        assert not reply["result"].get("isError"), reply  # the tools keep serving
    return proc


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        # The client's grace, as a bounded wait: past it, a client would SIGTERM.
        code = proc.wait(timeout=CLIENT_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, late = proc.communicate()
        pytest.fail(
            f"still running {CLIENT_GRACE}s after the client let go; stderr:\n"
            + late.decode(errors="replace")
        )
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return code, stderr


def _one_loss(stderr: str, folder: Path) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Event loop is closed" not in stderr, stderr
    losses = [line for line in stderr.splitlines() if LOSS.search(line)]
    assert len(losses) == 1, stderr
    found = LOSS.search(losses[0])
    assert found is not None
    # Two calls (plus, with middleware, nothing more: the decorator recorded them).
    assert found.group(1) == "2", losses[0]
    assert found.group(2) == str(folder), losses[0]
    assert "gave up writing" not in stderr


@pytest.mark.parametrize("sdk", installed_server_sdks())
def test_stdin_eof_with_a_dead_database_exits_in_time_and_reports_once(
    sdk: str, tmp_path: Path
) -> None:
    folder = tmp_path / "audit.db"
    folder.mkdir()
    proc = _serve(sdk, folder, tmp_path)
    assert proc.stdin is not None
    proc.stdin.close()  # what every client does first
    code, stderr = _finish(proc)
    assert code == 0, stderr
    _one_loss(stderr, folder)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sdk", installed_server_sdks())
def test_sigterm_with_a_dead_database_ends_at_once_and_reports_once(
    sdk: str, tmp_path: Path
) -> None:
    folder = tmp_path / "audit.db"
    folder.mkdir()
    proc = _serve(sdk, folder, tmp_path)
    proc.send_signal(signal.SIGTERM)  # what mcp-cli does, stdin still open
    code, stderr = _finish(proc)
    assert code == -signal.SIGTERM, stderr  # it dies of the signal, as without finops_audit
    _one_loss(stderr, folder)
    assert "could not flush" not in stderr  # a dead file is not waited for
