"""The example server, spawned over stdio and driven by real clients; then the trail is read.

Every call that reaches a tool is in the trail exactly once, with its status,
parameters, error message and the client's name and version. Where the SDK has
middleware (fastmcp, mcp 2.x) the calls rejected for invalid arguments and the
calls to unknown tools are in it too, each exactly once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from finops_audit import AuditService, AuditStatus

from ._harness import (
    CALLS,
    CLIENT_NAME,
    CLIENT_VERSION,
    TOOLS,
    decode,
    run_fastmcp,
    run_official,
    server_args,
)
from .conftest import installed_server_sdks

SDKS = installed_server_sdks()
CLIENTS = ["official"] + (["fastmcp"] if "fastmcp" in SDKS else [])
WITH_MIDDLEWARE = {"fastmcp", "mcp2"}
COMBOS = [pytest.param(s, c, id=f"{s}-{c}") for s in SDKS for c in CLIENTS]


@pytest.mark.asyncio
@pytest.mark.parametrize(("sdk", "client"), COMBOS)
async def test_every_call_is_in_the_trail(sdk: str, client: str, tmp_path: Path) -> None:
    db = tmp_path / "trail" / "audit.db"
    run = run_official if client == "official" else run_fastmcp
    session = await run(sdk, db)

    # What the client saw: the tools, and an error result for every bad call.
    assert session.tool_names == TOOLS
    for call, (is_error, text) in zip(CALLS, session.results, strict=True):
        assert is_error == (call.kind != "ok"), (call, text)
    compliance = decode(session.results[0][1])
    assert compliance["policy"] == "strict"
    assert compliance["checked"] == 7

    # The session is over and the server has exited: everything is on disk.
    with AuditService(db_path=db) as svc:
        rows = list(reversed(svc.get_logs(limit=1000)))  # oldest first
    audited = {"ok", "fail"} | ({"invalid", "unknown"} if sdk in WITH_MIDDLEWARE else set())
    expected = [call for call in CALLS if call.kind in audited]
    assert [r.tool_name for r in rows] == [c.tool for c in expected], "one row per call, in order"

    for call, row in zip(expected, rows, strict=True):
        where = f"{call.tool} {call.kind}: {row!r}"
        assert row.client_name == CLIENT_NAME, where
        assert row.client_version == CLIENT_VERSION, where
        assert row.request_id is not None, where
        assert row.session_id is None, where  # stdio has no session id
        assert row.execution_time_ms is not None, where
        assert row.execution_time_ms >= 0, where
        if call.kind == "ok":
            assert row.status == AuditStatus.SUCCESS, where
            assert row.error_message is None, where
        else:
            assert row.status == AuditStatus.FAILURE, where
            assert row.error_message is not None, where
            assert row.error_message.startswith(call.error or ""), where
        expected_params = call.recorded_params or call.arguments
        assert {k: row.parameters.get(k) for k in expected_params} == expected_params, where
        if call.kind in {"invalid", "unknown"}:
            # Recorded by the middleware: the arguments exactly as the client sent them.
            assert row.parameters == call.arguments, where
    request_ids = [r.request_id for r in rows]
    assert len(set(request_ids)) == len(request_ids), "each call is its own request"


@pytest.mark.parametrize("sdk", SDKS)
def test_server_prints_nothing_on_stdout(sdk: str, tmp_path: Path) -> None:
    """stdout is the protocol: a server started and stopped (stdin EOF) wrote nothing there."""
    proc = subprocess.run(
        [sys.executable, *server_args(sdk)],
        input=b"",
        capture_output=True,
        env={"AUDIT_DB_PATH": str(tmp_path / "audit.db"), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"", proc.stdout
