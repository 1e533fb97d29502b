"""Run the dashboard with uvicorn: the ``finops-audit serve`` command's body.

The socket is bound here, before uvicorn starts, so the printed URL carries
the real port (``--port 0`` picks a free one) and nothing is served before the
token exists. uvicorn's access log is off: it would write the token of the
first request's ``?token=`` into the terminal's scrollback.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import uvicorn

from ..service import AuditService
from ._app import create_app
from ._guard import is_loopback

__all__ = ["serve"]

log = logging.getLogger("finops_audit.dashboard")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown.strip('[]')}]" if ":" in shown else shown
    return f"http://{shown}:{port}/?token={token}"


def serve(
    service: AuditService,
    *,
    host: str,
    port: int,
    token: str | None,
    allowed_hosts: Iterable[str] = (),
    echo: Callable[[str], None] = print,
) -> None:
    """Serve ``service``'s dashboard until interrupted (Ctrl-C or SIGTERM)."""
    hosts = list(allowed_hosts)
    if not is_loopback(host):
        echo(
            f"WARNING: serving the audit trail on {host}, not loopback: anyone who can reach "
            "this port and has the token can read every recorded call. Prefer 127.0.0.1 "
            "and an SSH tunnel."
        )
        hosts.append(host)
        if host in ("0.0.0.0", "::"):
            hosts += [socket.gethostname(), socket.getfqdn()]
    app = create_app(service, token, allowed_hosts=hosts)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    echo(f"finops-audit dashboard of {service.trail}")
    echo(f"open {url_for(host, bound_port, app.state.token)}")
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again
    # for the handler it found: ours ignores it, so the service closes and the
    # command exits 0 (a stop asked for is not a crash).
    previous = _quiet_stop_signals()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quiet_stop_signals() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}


def _stopped(signum: int, frame: FrameType | None) -> None:
    log.debug("dashboard stopped by signal %d", signum)
