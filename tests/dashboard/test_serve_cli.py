"""``finops-audit serve`` as a user runs it: a real process, a real socket, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from finops_audit import AuditService

from .conftest import ServeProcess, record, standard_calls


@pytest.fixture
def trail_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditService(db_path=path, handle_signals=False) as svc:
        record(svc, standard_calls())
    return path


def test_prints_the_url_once_and_serves_it(
    trail_file: Path, serve: Callable[..., ServeProcess]
) -> None:
    server = serve("--db", str(trail_file))
    assert server.url.startswith("http://127.0.0.1:")
    assert len(server.token) >= 32
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{server.base}/api/logs").status_code == 401
        page = client.get(server.url, follow_redirects=True)
        assert page.status_code == 200
        assert "finops-audit dashboard" in page.text
        logs = client.get(f"{server.base}/api/logs?limit=1000")  # the cookie from the redirect
        assert len(logs.json()["entries"]) == 46
    assert sum(server.token in line for line in server.lines) == 1


def test_token_from_the_environment_or_the_option(
    trail_file: Path, serve: Callable[..., ServeProcess]
) -> None:
    by_env = serve("--db", str(trail_file), env={"AUDIT_DASHBOARD_TOKEN": "from-env-0123456789"})
    assert by_env.token == "from-env-0123456789"
    by_option = serve("--db", str(trail_file), "--token", "from-option-0123456789")
    auth = {"Authorization": "Bearer from-option-0123456789"}
    assert httpx.get(f"{by_option.base}/api/health", headers=auth, timeout=30).is_success


def test_non_loopback_bind_warns_and_still_needs_the_token(
    trail_file: Path, serve: Callable[..., ServeProcess]
) -> None:
    server = serve("--db", str(trail_file), "--host", "0.0.0.0")
    assert any("WARNING" in line and "not loopback" in line for line in server.lines)
    assert httpx.get(f"{server.base}/api/logs", timeout=30).status_code == 401
    auth = {"Authorization": f"Bearer {server.token}"}
    assert httpx.get(f"{server.base}/api/logs", headers=auth, timeout=30).is_success


def test_missing_database_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "finops_audit.cli", "serve", "--db", str(tmp_path / "nope.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "no audit database" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_the_extra_one_line_names_it(trail_file: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules.update(starlette=None, uvicorn=None, sse_starlette=None)\n"
        "from finops_audit.cli import main\n"
        f"main(['serve', '--db', {str(trail_file)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pip install 'finops-audit[dashboard]'" in lines[0]


def test_port_in_use_is_a_clear_error(trail_file: Path, serve: Callable[..., ServeProcess]) -> None:
    first = serve("--db", str(trail_file))
    port = first.base.rsplit(":", 1)[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finops_audit.cli",
            "serve",
            "--db",
            str(trail_file),
            "--port",
            port,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_it_with_a_stream_open(
    trail_file: Path, serve: Callable[..., ServeProcess], sig: signal.Signals
) -> None:
    server = serve("--db", str(trail_file))
    auth = {"Authorization": f"Bearer {server.token}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{server.base}/api/stream", headers=auth) as response,
    ):
        assert next(response.iter_lines()).startswith("event: hello")
        os.kill(server.proc.pid, sig)
        assert server.proc.wait(60) == 0
    assert "Traceback" not in (server.proc.stderr.read() if server.proc.stderr else "")
