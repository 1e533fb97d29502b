"""Sensitive keys are matched by their words: a table of key names, each secret or not.

Checked twice: by the rule itself, and end to end through a real service,
where a secret key's value must be ``[REDACTED]`` and a readable key's value
stored as it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finops_audit import AuditService, audit_tool_sync
from finops_audit._secret_keys import KeyRule, key_words
from finops_audit.redaction import DEFAULT_SENSITIVE_KEYS


def rule(*extra: str) -> KeyRule:
    """The rule as the redactor builds it."""
    return KeyRule(extra, exact=DEFAULT_SENSITIVE_KEYS)


SECRET = [
    "password",
    "Password",
    "PASSWORD",
    "dbPassword",
    "DB-PASSWORD",
    "db_password",
    "db.password",
    "password2",
    "user_passwd",
    "pwd",
    "passphrase",
    "x-api-key",
    "X-API-KEY",
    "apiKey",
    "APIKey",
    "api_key",
    "apikey",
    "client_secret",
    "clientSecret",
    "clientsecret",
    "secret",
    "secrets",
    "private_key",
    "privateKey",
    "ssh_private_key",
    "signing_key",
    "refresh_token",
    "access_token",
    "accessToken",
    "id_token",
    "csrf_token",
    "token",
    "aws_session_token",
    "AWS_SECRET_ACCESS_KEY",
    "aws_secret_access_key",
    "aws_access_key",
    "github_token",
    "GITHUB_TOKEN",
    "stripe_secret_key",
    "secret_key",
    "set-cookie",
    "Set-Cookie",
    "cookie",
    "cookies",
    "Authorization",
    "proxy-authorization",
    "HTTPAuthorization",
    "basic_auth",
    "credentials",
    "credential",
    "creds",
    "connection_string",
    "connectionString",
    "database_dsn",
    "jwt",
    "bearer_token",
    "mfa_code",
    "verification_code",
    "recovery_code",
    "authCode",
    "otp",
    "card_pin",
    "password_hash",
    "webhook_signing_key",
    "master_key",
    "sshkey",
]

READABLE = [
    "max_tokens",
    "maxTokens",
    "token_count",
    "tokens",
    "prompt_tokens",
    "token_type",
    "token_url",
    "author",
    "authors",
    "auth_method",
    "authorization_url",
    "password_policy_name",
    "password_min_length",
    "secret_santa_budget",
    "secret_name",
    "secret_arn",
    "api_key_id",
    "access_key_id",
    "public_key",
    "primary_key",
    "sort_key",
    "key",
    "keys",
    "monkey",
    "hotkey",
    "region",
    "account_id",
    "cookie_name",
    "session_id",
    "passenger_count",
    "compass",
    "bypass_cache",
    "spin",
    "pinned",
    "credential_type",
    "otp_enabled",
    "XMLHttpRequest",
    "zip_code",
    "country_code",
    "status_code",
    "code",
    "",  # no words at all
    "__",
]


@pytest.mark.parametrize("key", SECRET)
def test_secret_key(key: str) -> None:
    assert rule().secret(key) is True


@pytest.mark.parametrize("key", READABLE)
def test_readable_key(key: str) -> None:
    assert rule().secret(key) is False


def test_the_table_is_big_and_has_no_duplicates() -> None:
    assert len(SECRET) + len(READABLE) >= 40
    assert len(SECRET) >= 20
    assert len(READABLE) >= 20
    assert not set(SECRET) & set(READABLE)


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("dbPassword", ("db", "password")),
        ("DB-PASSWORD", ("db", "password")),
        ("HTTPAuthorization", ("http", "authorization")),
        ("x-api-key", ("x", "api", "key")),
        ("aws_secret_access_key2", ("aws", "secret", "access", "key")),
        ("set cookie", ("set", "cookie")),
        ("a:b/c.d", ("a", "b", "c", "d")),
        ("", ()),
        ("___", ()),
    ],
)
def test_key_words(key: str, words: tuple[str, ...]) -> None:
    assert key_words(key) == words


def test_extra_keys_match_by_their_last_words() -> None:
    extra = rule("badge", "tenant_secret_code")
    assert extra.secret("badge")
    assert extra.secret("employee_badge")
    assert extra.secret("employeeBadge")
    assert extra.secret("TenantSecretCode")
    assert extra.secret("tenantsecretcode")
    assert not extra.secret("badge_color")
    assert not extra.secret("badges")
    assert not extra.secret("secret_code_length")


def test_each_distinct_key_is_decided_once() -> None:
    once = rule()
    for _ in range(1000):
        once.secret("db_password")
        once.secret("region")
    info = once.secret.cache_info()  # type: ignore[attr-defined]
    assert info.misses == 2
    assert info.hits == 1998


def test_keys_end_to_end(tmp_path: Path) -> None:
    params = {key: f"value-of-{i}-Zq9" for i, key in enumerate(SECRET + READABLE)}
    with AuditService(tmp_path / "audit.db") as service:

        @audit_tool_sync(service=service)
        def tool(**kwargs: str) -> None:
            return None

        tool(**params)
        [entry] = service.get_logs()
    for key in SECRET:
        assert entry.parameters[key] == "[REDACTED]", key
    for key in READABLE:
        assert entry.parameters[key] == params[key], key
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    for i, key in enumerate(SECRET):
        assert f"value-of-{i}-Zq9".encode() not in raw, key
