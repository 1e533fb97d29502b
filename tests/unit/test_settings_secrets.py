"""Settings never show a secret: repr, str, model_dump (python and JSON), errors, the service.

The secrets: the HMAC key, the database URL (its password and the whole URL),
the OTLP headers' values. Each is set from arguments and from the
environment, and every text view of the settings is searched for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finops_audit import AuditConfigError, AuditService
from finops_audit.config import AuditSettings, load_settings

KEY = "hmac-key-Zq9-0123456789abcdef0123456789abcdef"
DB_PASSWORD = "pgPassZq9word"
DB_URL = f"postgresql://auditor:{DB_PASSWORD}@db.internal:5432/audit"
OTLP_TOKEN = "otlpTokenZq9value"
HEADERS = {"Authorization": f"Bearer {OTLP_TOKEN}", "x-api-key": "apiKeyZq9value"}
NEEDLES = [KEY, DB_PASSWORD, OTLP_TOKEN, "apiKeyZq9value"]


def views(settings: AuditSettings) -> dict[str, str]:
    return {
        "repr": repr(settings),
        "str": str(settings),
        "model_dump": repr(settings.model_dump()),
        "model_dump(json)": json.dumps(settings.model_dump(mode="json")),
        "model_dump_json": settings.model_dump_json(),
        "format": f"{settings!r} {settings}",
    }


def assert_masked(settings: AuditSettings) -> None:
    for name, text in views(settings).items():
        for needle in NEEDLES:
            assert needle not in text, f"{needle} is in {name}()"
        assert "Authorization" in text, name  # header names stay, for debugging
    # the values the library itself uses are intact
    assert settings.hmac_key is not None
    assert settings.hmac_key.get_secret_value() == KEY
    assert settings.db_url is not None
    assert settings.db_url.get_secret_value() == DB_URL
    assert settings.otlp_headers == HEADERS


def test_explicit_secrets_are_masked() -> None:
    assert_masked(
        AuditSettings(
            hmac_key=KEY,
            db_url=DB_URL,
            otlp_endpoint="http://collector:4318",
            otlp_headers=HEADERS,
        )
    )


def test_secrets_from_the_environment_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_HMAC_KEY", KEY)
    monkeypatch.setenv("AUDIT_DB_URL", DB_URL)
    monkeypatch.setenv("AUDIT_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("AUDIT_OTLP_HEADERS", ",".join(f"{k}={v}" for k, v in HEADERS.items()))
    assert_masked(load_settings())


def test_a_settings_error_does_not_show_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_DB_URL", f"mysql://auditor:{DB_PASSWORD}@db/audit")
    with pytest.raises(AuditConfigError, match="AUDIT_DB_URL") as info:
        load_settings()
    assert DB_PASSWORD not in str(info.value)
    monkeypatch.delenv("AUDIT_DB_URL")
    monkeypatch.setenv("AUDIT_OTLP_HEADERS", f"Authorization=Bearer {OTLP_TOKEN},broken")
    with pytest.raises(AuditConfigError, match="AUDIT_OTLP_HEADERS") as info:
        load_settings()
    assert OTLP_TOKEN not in str(info.value)


def test_the_service_repr_masks_the_database_password(tmp_path: Path) -> None:
    service = AuditService(tmp_path / "audit.db", hmac_key=KEY)
    try:
        text = f"{service!r} {service} {service.settings!r}"
    finally:
        service.close()
    for needle in NEEDLES:
        assert needle not in text
    assert "audit.db" in text
