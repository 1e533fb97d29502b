"""``create_app``: the dashboard as one Starlette ASGI app, served alone or mounted.

``finops-audit serve`` runs it with uvicorn; an MCP server already served over
HTTP can mount it (``Mount("/audit", app=create_app(service, token=...))``).
The page and its script are files of this package; nothing is fetched from
anywhere else, and there is no build step.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..exceptions import AuditConfigError
from ..service import AuditService
from ._api import Api
from ._guard import Guard
from ._tail import Poller

__all__ = ["create_app"]

log = logging.getLogger("finops_audit.dashboard")

STATIC = Path(__file__).with_name("static")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")


def create_app(
    service: AuditService,
    token: str | None = None,
    *,
    allowed_hosts: Iterable[str] = (),
    heartbeat: float = 15.0,
    poll_interval: float = 0.25,
) -> Starlette:
    """The read-only dashboard of ``service``'s trail.

    ``token`` is required on every request (``?token=`` once, then a cookie;
    or ``Authorization: Bearer``); ``None`` makes a random one, readable as
    ``app.state.token``. ``allowed_hosts`` adds names the browser may use in
    ``Host``/``Origin`` besides localhost, 127.0.0.1 and [::1] (for a
    non-loopback bind). ``heartbeat`` is the seconds of silence after which a
    stream sends a ``heartbeat`` event; ``poll_interval`` how often the one
    shared poller looks for new entries while a stream is open.
    """
    if token is None:
        token = secrets.token_urlsafe(24)
    if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
        raise AuditConfigError(
            "the dashboard token must be 1-512 characters of A-Z a-z 0-9 . _ ~ + / = -"
        )
    if len(token) < 16:
        log.warning("the dashboard token is %d characters; use 16 or more", len(token))
    for name, value in (("heartbeat", heartbeat), ("poll_interval", poll_interval)):
        if not 0 < value <= 3600:
            raise AuditConfigError(f"{name}={value!r} must be between 0 and 3600 seconds")
    poller = Poller(service, poll_interval)
    api = Api(service, poller, heartbeat)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await poller.aclose()

    routes: list[Route | Mount] = [Route("/", page)]
    routes += [Route(path, fn, methods=methods) for path, (fn, methods) in api.routes().items()]
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token, allowed_hosts=list(allowed_hosts))],
        lifespan=lifespan,
    )
    app.state.token = token
    app.state.poller = poller
    app.state.api = api
    return app
