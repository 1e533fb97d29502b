"""Who may talk to the dashboard: the token, the Host and Origin checks, the response headers.

The trail holds who called what with which arguments, so the page is treated
like the database file: nothing is served without the token, on any path.
The token arrives once as ``?token=`` (the URL printed at start); the page
answer sets it as an HttpOnly, SameSite=Strict cookie and redirects to the
same URL without it, so it leaves the address bar and the history. Scripts
send ``Authorization: Bearer <token>``. A page on another site cannot use a
victim's browser against it: the cookie is never sent cross-site, a foreign
``Origin`` is refused, and so is a ``Host`` that is not this server's own
(DNS rebinding, where an attacker's name resolves to 127.0.0.1).
Every response says ``Cache-Control: no-store`` and
``Content-Security-Policy: default-src 'self'``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LOOPBACK_HOSTS", "Guard", "is_loopback"]

#: Names a browser on this machine uses for a server bound to loopback.
#: ``testserver`` is the name Starlette's and httpx's test clients send; being
#: a single label, no attacker's DNS answers for it.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "testserver"})

_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

_REFUSAL = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>finops-audit: sign-in required</title></head>
<body><h1>Sign-in required</h1>
<p>This dashboard needs its access token. Open the URL that <code>finops-audit serve</code>
printed when it started (it ends in <code>?token=...</code>), or send
<code>Authorization: Bearer &lt;token&gt;</code>.</p></body></html>
"""


def is_loopback(host: str) -> bool:
    return host.strip("[]") in {"localhost", "127.0.0.1", "::1"} or host.startswith("127.")


def _hostname(value: str) -> str:
    """``example.com:8765`` -> ``example.com``; ``[::1]:8765`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: checks Host, Origin and the token, then adds the security headers."""

    def __init__(self, app: ASGIApp, token: str, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self._token = token.encode()
        self.allowed_hosts = LOOPBACK_HOSTS | {_hostname(h) for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return  # websockets: none offered
        send = self._with_headers(send)
        headers = Headers(scope=scope)
        host = _hostname(headers.get("host", ""))
        if host not in self.allowed_hosts:
            await _plain(send, 403, f"host {host[:100]!r} is not this dashboard's; refused")
            return
        origin = headers.get("origin")
        if origin is not None and not self._same_site(origin):
            await _plain(send, 403, "cross-origin request refused")
            return
        cookie = self._cookie_name(scope)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if "token" in query and self._valid(query["token"]):
            if scope["method"] == "GET" and not scope["path"].startswith("/api/"):
                await self._login(scope, send, cookie, query)
                return
        elif not (
            self._valid(_bearer(headers.get("authorization", "")))
            or self._valid(_cookie(headers.get("cookie", ""), cookie))
        ):
            await self._refuse(scope, send)
            return
        await self.app(scope, receive, send)

    def _valid(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(
            candidate.encode("utf-8", "replace") if candidate else b"", self._token
        )

    def _same_site(self, origin: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and _hostname(parts.netloc) in self.allowed_hosts

    @staticmethod
    def _cookie_name(scope: Scope) -> str:
        # Cookies ignore the port: two dashboards on one host keep separate ones.
        server = scope.get("server") or ("", 0)
        return f"finops_audit_{server[1] or 0}"

    async def _login(self, scope: Scope, send: Send, cookie: str, query: dict[str, str]) -> None:
        rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
        location = scope["path"] + (f"?{rest}" if rest else "")
        token = self._token.decode()
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1", "replace")),
                    (
                        b"set-cookie",
                        f"{cookie}={token}; Path=/; HttpOnly; SameSite=Strict".encode(),
                    ),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if scope["path"].startswith("/api/"):
            body = orjson.dumps({"error": "missing or wrong token; send Authorization: Bearer"})
            kind = b"application/json"
        else:
            body, kind = _REFUSAL, b"text/html; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", kind),
                    (b"www-authenticate", b'Bearer realm="finops-audit"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def sender(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in _SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return sender


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _plain(send: Send, status: int, text: str) -> None:
    body = orjson.dumps({"error": text})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
