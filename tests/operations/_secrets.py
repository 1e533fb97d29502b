"""One recorded session that puts a secret in every field an entry has.

Shared by the byte checks of the SQLite files, exports and backups
(``test_secret_bytes``), of OTLP request bodies (``tests/otlp``) and of the
central PostgreSQL rows (``tests/central``): each records :func:`record_secrets`
through a service and then searches whatever bytes it produced for
:data:`NEEDLES`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from finops_audit import AuditService, audit_context, audit_tool_sync

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJvcHMtYm90IiwiaWF0IjoxNzAwMDAwMDAwfQ."
    "Qm9ndXNTaWduYXR1cmVGb3JUZXN0czEyMzQ1Njc4OTA"
)
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n"


def secret(name: str) -> str:
    return f"Zq9{name}S3cr3tV4lue"


#: Secrets handed to the tools below, in every field; none may be stored.
NEEDLES = [
    secret("login"),  # password next to a value too big to store whole
    secret("dbpw"),  # dbPassword
    secret("nested"),  # credentials={"password": ...}, echoed by the error message
    secret("github"),  # github_token
    secret("stripe"),  # stripe_secret_key
    secret("session"),  # aws_session_token
    secret("xapikey"),  # label x-api-key
    secret("labelbearer"),  # label authorization="Bearer ..."
    secret("hdr"),  # headers={"Authorization": ...}
    secret("cookie"),  # set-cookie, inside a list
    AWS_SECRET,  # at the start of a 100 KB value, in the stored preview's reach
    AWS_KEY_ID,  # in the user field
    JWT,  # as session_id
    JWT.split(".")[1],
    JWT.split(".")[2],
    PEM_BODY,  # in the request_id field
]
#: Values that must be stored as they are (to know the right bytes were searched).
KEPT = ["eu-west-1", "svc-finops", "acme-tenant"]


def record_secrets(service: AuditService) -> int:
    """Make the calls; return how many entries they record."""

    @audit_tool_sync(service=service)
    def login(user: str, password: str, payload: str, region: str) -> None:
        raise PermissionError(f"login failed for {user} with {password}")

    @audit_tool_sync(service=service)
    def connect(**kwargs: Any) -> str:
        creds = kwargs.get("credentials") or {}
        if creds:
            raise PermissionError(
                f"bad password {creds['password']} for {creds['username']}; "
                f"key {AWS_SECRET} " + "x" * 5_000_000
            )
        return "ok"

    with contextlib.suppress(PermissionError):
        login("svc-finops", secret("login"), "y" * 70_000, "eu-west-1")
    with audit_context(
        user=f"ops {AWS_KEY_ID}",
        session_id=JWT,
        request_id=PEM,
        tenant="acme-tenant",
        authorization=f"Bearer {secret('labelbearer')}",
        **{"x-api-key": secret("xapikey")},
    ):
        connect(
            dbPassword=secret("dbpw"),
            github_token=secret("github"),
            stripe_secret_key=secret("stripe"),
            aws_session_token=secret("session"),
            headers={"Authorization": f"Bearer {secret('hdr')}", "Accept": "text/plain"},
            responses=[{"status": 200, "set-cookie": secret("cookie")}],
            note=f"{AWS_SECRET} " + "n" * 100_000,
            blob="b" * 10_000_000,
            region="eu-west-1",
            max_tokens=4096,
        )
        with contextlib.suppress(PermissionError):
            connect(
                credentials={"username": "svc-finops", "password": secret("nested")},
                region="eu-west-1",
            )
    return 3


def absent(data: bytes, where: str) -> None:
    """No needle in ``data``; ``where`` names the bytes in the failure."""
    for needle in NEEDLES:
        assert needle.encode() not in data, f"{needle[:24]!r}… is in {where}"


def present(data: bytes, where: str) -> None:
    """The kept values are in ``data``: the search looked at the right bytes."""
    for value in KEPT:
        assert value.encode() in data, f"{value!r} is not in {where}"
