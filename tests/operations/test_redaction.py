"""Secrets never reach the disk: a catalogue of secret shapes, checked in the file's bytes.

For each shape: the tool gets and returns its arguments untouched; the stored
entry shows ``[REDACTED]`` where the secret was and keeps its siblings; and
the raw secret is in none of the database, ``-wal`` and ``-shm`` files, while
the service is open (after a flush) and after it is closed.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from finops_audit import AuditConfigError, AuditService, audit_context, audit_tool_sync

from ._util import raw_bytes

R = "[REDACTED]"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJvcHMtYm90IiwiaWF0IjoxNzAwMDAwMDAwfQ."
    "Qm9ndXNTaWduYXR1cmVGb3JUZXN0czEyMzQ1Njc4OTA"
)
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n"
SHA1 = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"


def _secret(name: str) -> str:
    return f"Zq9-{name}-s3cr3t-v4lue"


#: name -> (parameters, what must be stored, raw secrets that must not be on disk)
CATALOGUE: dict[str, tuple[dict[str, Any], dict[str, Any], list[str]]] = {}


def _key_case(name: str, key: str) -> None:
    secret = _secret(name)
    CATALOGUE[name] = (
        {key: secret, "region": "eu-west-3"},
        {key: R, "region": "eu-west-3"},
        [secret],
    )


for _name, _key in [
    ("password", "password"),
    ("Password", "Password"),
    ("PASS_WORD", "PASS_WORD"),
    ("api_key", "api_key"),
    ("apiKey", "apiKey"),
    ("API-Key", "API-Key"),
    ("x-api-key", "x-api-key"),
    ("authorization", "authorization"),
    ("cookie", "cookie"),
    ("set-cookie", "set-cookie"),
    ("private_key", "private_key"),
    ("client_secret", "client_secret"),
    ("access_token", "access_token"),
    ("refresh_token", "refresh_token"),
    ("secret", "secret"),
    ("token", "Token"),
    ("passwd", "passwd"),
]:
    _key_case(_name, _key)

CATALOGUE["authorization-header-dict"] = (
    {
        "url": "https://cost.example.com/v1",
        "headers": {"Authorization": f"Bearer {_secret('hdr')}", "Accept": "application/json"},
    },
    {
        "url": "https://cost.example.com/v1",
        "headers": {"Authorization": R, "Accept": "application/json"},
    },
    [_secret("hdr")],
)
CATALOGUE["credentials-dict"] = (
    {"credentials": {"username": "svc-finops", "password": _secret("cred")}, "dry_run": True},
    {"credentials": R, "dry_run": True},
    [_secret("cred")],
)
CATALOGUE["nested-depth-3"] = (
    {"config": {"clusters": [{"name": "prod", "password": _secret("deep")}, {"name": "dev"}]}},
    {"config": {"clusters": [{"name": "prod", "password": R}, {"name": "dev"}]}},
    [_secret("deep")],
)
CATALOGUE["nested-lists"] = (
    {"batches": [[{"id": 1, "access_token": _secret("lst")}], [{"id": 2}]]},
    {"batches": [[{"id": 1, "access_token": R}], [{"id": 2}]]},
    [_secret("lst")],
)
CATALOGUE["aws-secret-access-key-value"] = (
    {"note": f"rotated to {AWS_SECRET} today", "account_alias": "prod"},
    {"note": f"rotated to {R} today", "account_alias": "prod"},
    [AWS_SECRET],
)
CATALOGUE["aws-access-key-id-value"] = (
    {"key_id": AWS_KEY_ID, "region": "us-east-1"},
    {"key_id": R, "region": "us-east-1"},
    [AWS_KEY_ID],
)
CATALOGUE["aws-keys-in-a-list"] = (
    {"pair": [AWS_KEY_ID, AWS_SECRET], "count": 2},
    {"pair": [R, R], "count": 2},
    [AWS_KEY_ID, AWS_SECRET],
)
CATALOGUE["bearer-token-value"] = (
    {"header": f"Bearer {_secret('brr')}xyz", "retries": 3},
    {"header": R, "retries": 3},
    [_secret("brr")],
)
CATALOGUE["jwt-value"] = (
    {"session": JWT, "user": "alice"},
    {"session": R, "user": "alice"},
    [JWT, JWT.split(".")[1], JWT.split(".")[2]],
)
CATALOGUE["pem-private-key-value"] = (
    {"material": PEM, "kind": "rsa"},
    {"material": R + "\n", "kind": "rsa"},
    [PEM_BODY],
)


def _run(db_path: Path, params: dict[str, Any], **settings: Any) -> tuple[Any, Any, bytes]:
    """Call a tool with ``params``; return (its result, the stored parameters, open-file bytes)."""
    service = AuditService(db_path, **settings)
    try:

        @audit_tool_sync(name="call_api", service=service)
        def call_api(**kwargs: Any) -> dict[str, Any]:
            return kwargs

        result = call_api(**params)
        service.flush()
        while_open = raw_bytes(db_path)
        [entry] = service.get_logs()
    finally:
        service.close()
    return result, entry.parameters, while_open


def _absent(db_path: Path, while_open: bytes, secrets: list[str]) -> None:
    after_close = raw_bytes(db_path)
    assert b"call_api" in while_open + after_close  # the reads see the entry
    for secret in secrets:
        for where, data in (("while open", while_open), ("after close", after_close)):
            assert secret.encode() not in data, f"{secret!r} is on disk {where}"


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_secret_in_parameters_never_reaches_the_disk(db_path: Path, case: str) -> None:
    params, stored, secrets = CATALOGUE[case]
    original = copy.deepcopy(params)
    result, got, while_open = _run(db_path, params)
    assert result == original  # the tool saw and returned the real values
    assert params == original  # and the caller's objects were not touched
    assert got == stored
    _absent(db_path, while_open, secrets)


def test_catalogue_is_broad() -> None:
    assert len(CATALOGUE) >= 20


ERRORS = {
    "aws-secret": (AWS_SECRET, f"bad token {R}"),
    "aws-key-id": (AWS_KEY_ID, f"bad token {R}"),
    "bearer": (f"Bearer {_secret('err')}", f"bad token {R}"),
    "jwt": (JWT, f"bad token {R}"),
    "pem": (PEM, f"bad token {R}\n"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_secret_in_an_error_message_never_reaches_the_disk(db_path: Path, case: str) -> None:
    secret, message = ERRORS[case]
    service = AuditService(db_path)
    try:

        @audit_tool_sync(name="call_api", service=service)
        def call_api(region: str) -> None:
            raise ValueError(f"bad token {secret}")

        with pytest.raises(ValueError, match="bad token") as info:
            call_api("eu-west-3")
        assert secret in str(info.value)  # the caller's exception is untouched
        service.flush()
        while_open = raw_bytes(db_path)
        [entry] = service.get_logs()
    finally:
        service.close()
    assert entry.error_message == f"ValueError: {message}"
    assert entry.parameters == {"region": "eu-west-3"}
    needles = [PEM_BODY] if case == "pem" else [secret.removeprefix("Bearer ")]
    _absent(db_path, while_open, needles)


def test_a_sensitive_argument_is_also_removed_from_the_error_message(db_path: Path) -> None:
    password = _secret("login")
    service = AuditService(db_path)
    try:

        @audit_tool_sync(name="call_api", service=service)
        def login(user: str, password: str) -> None:
            raise PermissionError(f"login failed for {user} with {password}")

        with pytest.raises(PermissionError):
            login("alice", password)
        service.flush()
        while_open = raw_bytes(db_path)
        [entry] = service.get_logs()
    finally:
        service.close()
    assert entry.parameters == {"user": "alice", "password": R}
    assert entry.error_message == f"PermissionError: login failed for alice with {R}"
    _absent(db_path, while_open, [password])


def test_a_hex_digest_is_not_a_secret(db_path: Path) -> None:
    params = {"commit": SHA1, "upper": SHA1.upper(), "sha256": hashlib.sha256(b"x").hexdigest()}
    _, got, while_open = _run(db_path, params)
    assert got == params
    assert SHA1.encode() in while_open + raw_bytes(db_path)


def test_extra_keys_and_patterns_from_the_environment(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_REDACT_KEYS", "tenant_secret_code, badge")
    monkeypatch.setenv("AUDIT_REDACT_PATTERNS", r"SSN-\d{3}-\d{2}-\d{4}")
    params = {
        "TenantSecretCode": "tsc-771-Zq9",
        "badge": "B-9981-Zq9",
        "note": "customer SSN-123-45-6789 called",
        "other": "SSN-12-345-6789 is not that shape",
    }
    _, got, while_open = _run(db_path, params)
    assert got == {
        "TenantSecretCode": R,
        "badge": R,
        "note": f"customer {R} called",
        "other": "SSN-12-345-6789 is not that shape",
    }
    _absent(db_path, while_open, ["tsc-771-Zq9", "B-9981-Zq9", "SSN-123-45-6789"])


def test_extra_pattern_applies_to_error_messages(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_REDACT_PATTERNS", r"SSN-\d{3}-\d{2}-\d{4}")
    with AuditService(db_path) as service:

        @audit_tool_sync(service=service)
        def lookup(customer: int) -> None:
            raise LookupError(f"no record for SSN-123-45-6789 ({customer})")

        with pytest.raises(LookupError):
            lookup(7)
        [entry] = service.get_logs()
    assert entry.error_message == f"LookupError: no record for {R} (7)"
    assert b"SSN-123-45-6789" not in raw_bytes(db_path)


def test_extra_patterns_as_a_json_list_may_contain_commas(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_REDACT_PATTERNS", r'["ACCT-\\d{2,4}", "PIN:\\d+"]')
    _, got, _ = _run(db_path, {"a": "x ACCT-123 y", "b": "PIN:4242"})
    assert got == {"a": f"x {R} y", "b": R}


def test_an_invalid_pattern_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_REDACT_PATTERNS", "SSN-(\\d{3}")
    with pytest.raises(AuditConfigError, match="AUDIT_REDACT_PATTERNS") as info:
        AuditService("x.db")
    assert "not a valid regular expression" in str(info.value)
    assert not Path("x.db").exists()
    monkeypatch.delenv("AUDIT_REDACT_PATTERNS")
    with pytest.raises(AuditConfigError, match="redact_patterns"):
        AuditService("x.db", redact_patterns=["(["])


HMAC_KEY = "pseudonym-key-0123456789abcdef-0123456789"


def _pseudonym(value: str) -> str:
    # the documented recipe: HMAC with the key's HKDF subkey labelled for pseudonyms
    prk = hmac.new(b"finops-audit", HMAC_KEY.encode(), "sha256").digest()
    subkey = hmac.new(prk, b"finops-audit/v2/pseudonym\x01", "sha256").digest()
    return "hmac:" + hmac.new(subkey, value.encode(), "sha256").hexdigest()[:32]


def test_hmac_pseudonyms_are_private_yet_searchable(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_HMAC_KEY", HMAC_KEY)
    monkeypatch.setenv("AUDIT_HMAC_FIELDS", "owner_email")
    arn = "arn:aws:iam::210987654321:role/FinOpsAuditor"
    params = {
        "account_id": "123456789012",
        "resource": arn,
        "owner_email": "dana.owner@example.com",
        "region": "eu-west-3",
        "count": 5,
    }
    result, got, while_open = _run(db_path, params)
    assert result == params
    assert got == {
        "account_id": _pseudonym("123456789012"),
        "resource": _pseudonym(arn),
        "owner_email": _pseudonym("dana.owner@example.com"),
        "region": "eu-west-3",
        "count": 5,
    }
    _absent(
        db_path,
        while_open,
        ["123456789012", "210987654321", "FinOpsAuditor", "dana.owner@example.com"],
    )
    with AuditService(db_path) as service:
        for original in ("123456789012", arn, "dana.owner@example.com", "eu-west-3"):
            assert len(service.get_logs(parameter_value=original)) == 1, original
        assert service.get_logs(parameter_value="999999999999") == []


def test_account_ids_stay_as_they_are_without_a_key(db_path: Path) -> None:
    params = {"account_id": "123456789012", "resource": "arn:aws:s3:::finops-reports"}
    _, got, _ = _run(db_path, params)
    assert got == params


def test_a_failing_custom_redactor_stores_a_marker_and_spares_the_tool(db_path: Path) -> None:
    def broken(params: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("boom")

    result, got, while_open = _run(db_path, {"region": "eu-west-3", "n": 1}, redactor=broken)
    assert result == {"region": "eu-west-3", "n": 1}
    assert got == {"$redaction_failed": "KeyError"}
    _absent(db_path, while_open, ["eu-west-3"])


def test_a_custom_redactor_runs_after_the_defaults(db_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def drop_internal(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params)
        return {k: v for k, v in params.items() if not k.startswith("internal_")}

    _, got, _ = _run(
        db_path,
        {"password": _secret("c"), "internal_note": "drop me", "region": "eu"},
        redactor=drop_internal,
    )
    assert got == {"password": R, "region": "eu"}
    assert seen == [{"password": R, "internal_note": "drop me", "region": "eu"}]


def test_redaction_can_be_turned_off(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_REDACT", "false")
    params = {"password": _secret("off"), "note": AWS_SECRET}
    _, got, _ = _run(db_path, params)
    assert got == params
    assert _secret("off").encode() in raw_bytes(db_path)


# --------------------------------------------------------------------------- issue 10, section 2


def test_redaction_comes_before_the_size_cap(db_path: Path) -> None:
    """Reproduced: the $truncated preview of a too-big call kept the password."""
    with AuditService(db_path) as service:

        @audit_tool_sync(service=service)
        def login(password: str, payload: str) -> None:
            return None

        login(password="hunter2-horse", payload="y" * 70_000)
        service.flush()
        while_open = raw_bytes(db_path)
        [entry] = service.get_logs()
    assert entry.parameters["password"] == R
    assert entry.parameters["payload"]["$truncated"] is True
    assert entry.parameters["payload"]["preview"].startswith("yyy")
    _absent(db_path, while_open + b"call_api", ["hunter2-horse", "hunter2"])


def test_labels_and_caller_fields_are_redacted(db_path: Path) -> None:
    """Reproduced: a label authorization="Bearer ..." and a JWT session id were stored as-is."""
    with AuditService(db_path) as service:

        @audit_tool_sync(service=service)
        def call_api(region: str) -> None:
            return None

        with audit_context(
            user="alice",
            session_id=JWT,
            auth_client_id=f"client {AWS_KEY_ID}",
            authorization=f"Bearer {_secret('label')}",
            db_password=_secret("labelpw"),
            team="finops",
        ):
            call_api("eu-west-3")
        service.flush()
        while_open = raw_bytes(db_path)
        [entry] = service.get_logs()
    assert entry.user == "alice"
    assert entry.session_id == R
    assert entry.auth_client_id == f"client {R}"
    assert entry.labels == {"authorization": R, "db_password": R, "team": "finops"}
    _absent(
        db_path, while_open, [_secret("label"), _secret("labelpw"), AWS_KEY_ID, *JWT.split(".")]
    )


def test_values_nested_in_a_sensitive_parameter_leave_the_error_message(db_path: Path) -> None:
    """Reproduced: credentials={"password": ...} leaked through ``bad password ...``."""
    password = _secret("nested")
    token = _secret("deeptoken")
    with AuditService(db_path) as service:

        @audit_tool_sync(name="call_api", service=service)
        def connect(credentials: dict[str, Any], options: dict[str, Any]) -> None:
            raise PermissionError(
                f"bad password {credentials['password']}, token {options['scm']['github_token']}"
            )

        with pytest.raises(PermissionError):
            connect({"user": "bob", "password": password}, {"scm": {"github_token": token}})
        service.flush()
        while_open = raw_bytes(db_path)
        [entry] = service.get_logs()
    assert entry.parameters == {"credentials": R, "options": {"scm": {"github_token": R}}}
    assert entry.error_message == f"PermissionError: bad password {R}, token {R}"
    _absent(db_path, while_open, [password, token])


def test_a_huge_value_keeps_its_neighbours_searchable(db_path: Path) -> None:
    """Reproduced: a 10 MB blob next to region="eu-west-1" left only the marker."""
    with AuditService(db_path) as service:

        @audit_tool_sync(service=service)
        def upload(blob: str, region: str) -> None:
            return None

        upload("b" * 10_000_000, region="eu-west-1")
        [entry] = service.get_logs(parameter_value="eu-west-1")
    assert entry.parameters["region"] == "eu-west-1"
    assert entry.parameters["blob"]["$truncated"] is True
    assert entry.parameters["blob"]["original_bytes"] == 10_000_000


def test_error_messages_have_their_own_cap(db_path: Path) -> None:
    """Reproduced: a 5,000,000-character error message was stored whole."""
    with AuditService(db_path, max_error_bytes=1024) as service:

        @audit_tool_sync(service=service)
        def fail(region: str) -> None:
            raise RuntimeError(f"{AWS_SECRET} " + "e" * 5_000_000)

        with pytest.raises(RuntimeError):
            fail("eu-west-3")
        [entry] = service.get_logs()
    message = entry.error_message or ""
    assert len(message.encode()) <= 1024
    assert message.startswith(f"RuntimeError: {R} eee")
    assert message.endswith(f"… [truncated, {len('RuntimeError: ') + 41 + 5_000_000} bytes]")
    assert AWS_SECRET.encode() not in raw_bytes(db_path)


def test_the_error_cap_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_MAX_ERROR_BYTES", "10")
    with pytest.raises(AuditConfigError, match="AUDIT_MAX_ERROR_BYTES"):
        AuditService("x.db")
    assert not Path("x.db").exists()


def test_a_failing_custom_redactor_on_a_huge_call_stores_the_safe_marker(db_path: Path) -> None:
    def broken(params: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("boom")

    params = {"password": _secret("big"), "blob": "x" * 300_000, "region": "eu-west-3"}
    _, got, while_open = _run(db_path, params, redactor=broken)
    assert got == {"$redaction_failed": "ValueError"}
    _absent(db_path, while_open, [_secret("big"), "eu-west-3"])
