"""Fixtures for the dashboard: a recorded trail, a test client, a real uvicorn server, a browser."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("sse_starlette")

import uvicorn

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client; httpx still works.
    warnings.filterwarnings("ignore", message=".*httpx.*")
    from starlette.testclient import TestClient

from finops_audit import AuditService, audit_context, audit_tool_sync
from finops_audit.dashboard import create_app

TOKEN = "test-token-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
#: In CI a missing browser fails the browser tests; elsewhere they are skipped.
REQUIRE_BROWSER = bool(os.environ.get("CI"))


Call = tuple[str, dict[str, Any], bool, dict[str, str]]


def _tool(svc: AuditService, name: str, fail: bool) -> Callable[..., Any]:
    @audit_tool_sync(service=svc, name=name)
    def tool(**kw: Any) -> Any:
        if fail:
            raise ValueError(f"bad region {kw.get('region')}")
        return kw

    return tool


def record(svc: AuditService, calls: list[Call]) -> None:
    """Make real audited calls: (tool name, kwargs, fail?, caller context)."""
    for name, kwargs, fail, caller in calls:
        with audit_context(**caller):
            try:
                _tool(svc, name, fail)(**kwargs)
            except ValueError:
                pass
    svc.flush()


def standard_calls() -> list[Call]:
    calls: list[Call] = []
    for i in range(30):
        calls.append(("get_costs", {"region": "eu-west-1", "month": i}, False, {"user": "alice"}))
    for i in range(10):
        calls.append(("find_untagged", {"region": "us-east-1", "n": i}, False, {"user": "bob"}))
    for _ in range(5):
        calls.append(("get_costs", {"region": "mars-1"}, True, {"user": "bob"}))
    calls.append(("lookup", {"q": "it's'; DROP TABLE audit_logs; --"}, False, {"user": "eve"}))
    return calls


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[AuditService]:
    """A service on a file holding 46 calls of three tools (5 failures, three users)."""
    svc = AuditService(db_path=tmp_path / "audit.db", handle_signals=False)
    record(svc, standard_calls())
    yield svc
    svc.close()


@pytest.fixture
def make_client(trail: AuditService) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(token: str | None = TOKEN, **options: Any) -> TestClient:
        app = create_app(trail, token=TOKEN, **options)
        client = TestClient(app, base_url="http://127.0.0.1:8765")
        if token is not None:
            client.headers["Authorization"] = f"Bearer {token}"
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        config.timeout_graceful_shutdown = 1
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        from tests.helpers import wait_until

        wait_until(lambda: self.server.started, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def live_server(trail: AuditService) -> Callable[..., LiveServer]:
    servers: list[LiveServer] = []

    def start(service: AuditService | None = None, **options: Any) -> LiveServer:
        options.setdefault("token", TOKEN)
        server = LiveServer(create_app(service or trail, **options)).__enter__()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.__exit__()


class ServeProcess:
    """``finops-audit serve`` in its own process; ``url`` is the printed one (with the token)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "finops_audit.cli", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = re.search(r"open (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
        else:
            raise AssertionError(f"serve printed no URL: {self.lines} {self.proc.stderr.read()}")
        self.base = self.url.split("/?", 1)[0]
        self.token = self.url.rsplit("token=", 1)[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
        proc = ServeProcess(list(args), env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def chromium_or_skip() -> str:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        if REQUIRE_BROWSER:
            pytest.fail(f"{CHROMIUM} is missing (install Debian's chromium; required in CI)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM if os.path.exists(CHROMIUM) else str(shutil.which("chromium"))
