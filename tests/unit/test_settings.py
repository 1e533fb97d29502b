"""Settings: environment variables, explicit arguments, validation at start-up."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from finops_audit import AuditConfigError, AuditService, AuditSettings, audit_tool_sync
from tests.helpers import disk_count


def _names(message: str, word: str) -> bool:
    """``word`` is named in the message, not merely inside the echoed bad value."""
    explanation = re.sub(r"""=('[^']*'|"[^"]*"|\S+)""", "", message, count=1)
    return re.search(rf"\b{re.escape(word)}\b", explanation) is not None


def test_defaults(tmp_path: Path) -> None:
    settings = AuditSettings()
    assert settings.db_path == Path("audit_logs.db")
    assert settings.logging_enabled is True
    assert settings.synchronous == "FULL"
    assert settings.batch_size <= settings.queue_size


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDIT_DB_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("AUDIT_SYNCHRONOUS", "normal")
    monkeypatch.setenv("AUDIT_BATCH_SIZE", "50")
    monkeypatch.setenv("AUDIT_QUEUE_SIZE", "500")
    monkeypatch.setenv("AUDIT_FLUSH_INTERVAL", "0.01")
    monkeypatch.setenv("AUDIT_OVERFLOW_POLICY", "DROP")
    with AuditService() as svc:
        assert svc.db_path == tmp_path / "env.db"
        assert svc.settings.synchronous == "NORMAL"
        assert svc.settings.batch_size == 50
        assert svc.settings.queue_size == 500
        assert svc.settings.flush_interval == 0.01
        assert svc.settings.overflow_policy == "drop"


def test_explicit_arguments_beat_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    mine = tmp_path / "mine.db"
    monkeypatch.setenv("AUDIT_DB_PATH", str(elsewhere))
    monkeypatch.setenv("AUDIT_BATCH_SIZE", "7")
    with AuditService(db_path=mine, batch_size=3) as svc:
        assert svc.db_path == mine
        assert svc.settings.batch_size == 3

        @audit_tool_sync(service=svc)
        def tool() -> None:
            return None

        tool()
        svc.flush()
        assert disk_count(mine) == 1
    assert not elsewhere.exists()


def test_explicit_argument_overrides_an_invalid_env_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUDIT_SYNCHRONOUS", "fast")
    with AuditService(db_path=tmp_path / "a.db", synchronous="NORMAL") as svc:
        assert svc.settings.synchronous == "NORMAL"


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("AUDIT_SYNCHRONOUS", "fast", ["OFF", "NORMAL", "FULL", "EXTRA"]),
        ("AUDIT_OVERFLOW_POLICY", "x", ["block", "drop", "raise"]),
        ("AUDIT_BATCH_SIZE", "0", ["1"]),
        ("AUDIT_BATCH_SIZE", "lots", ["integer"]),
        ("AUDIT_QUEUE_SIZE", "-5", ["1"]),
        ("AUDIT_FLUSH_INTERVAL", "0", ["0"]),
    ],
)
def test_invalid_env_value_names_the_variable_and_accepted_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, accepted: list[str]
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(AuditConfigError) as info:
        AuditService()
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert variable in message
    for word in accepted:
        assert _names(message, word), message


def test_invalid_boolean_env_value_lists_accepted_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_LOGGING_ENABLED", "maybe")
    with pytest.raises(AuditConfigError) as info:
        AuditService()
    message = str(info.value)
    assert "AUDIT_LOGGING_ENABLED" in message
    assert "true" in message.lower()
    assert "false" in message.lower()


def test_invalid_boolean_env_value_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUDIT_LOGGING_ENABLED", "maybe")
    with pytest.raises(AuditConfigError, match="AUDIT_LOGGING_ENABLED"):
        AuditService()


def test_invalid_env_value_fails_at_decoration_of_a_bare_tool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUDIT_OVERFLOW_POLICY", "sometimes")

    def tool() -> None:
        return None

    with pytest.raises(AuditConfigError, match="AUDIT_OVERFLOW_POLICY"):
        audit_tool_sync(tool)


@pytest.mark.parametrize(
    ("argument", "value", "accepted"),
    [
        ("synchronous", "fast", ["OFF", "NORMAL", "FULL", "EXTRA"]),
        ("overflow_policy", "x", ["block", "drop", "raise"]),
        ("batch_size", 0, ["1"]),
        ("queue_size", 0, ["1"]),
    ],
)
def test_invalid_argument_names_the_argument(
    tmp_path: Path, argument: str, value: object, accepted: list[str]
) -> None:
    with pytest.raises(AuditConfigError) as info:
        AuditService(db_path=tmp_path / "x.db", **{argument: value})
    message = str(info.value)
    assert argument in message
    assert f"AUDIT_{argument.upper()}" not in message
    for word in accepted:
        assert _names(message, word), message


def test_unknown_argument_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(AuditConfigError, match="colour"):
        AuditService(db_path=tmp_path / "x.db", colour="blue")


def test_small_queue_size_alone_is_usable_or_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_QUEUE_SIZE", "500")
    try:
        svc = AuditService()
    except AuditConfigError as exc:
        message = str(exc)
    else:
        with svc:
            assert svc.settings.batch_size <= 500
        return
    assert "AUDIT_QUEUE_SIZE" in message, message
    assert "AUDIT_BATCH_SIZE" in message, message


def test_database_runs_in_wal_mode(svc: AuditService, db_path: Path) -> None:
    @audit_tool_sync(service=svc)
    def tool() -> None:
        return None

    tool()
    svc.flush()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["OFF", "NORMAL", "FULL", "EXTRA", "normal"])
def test_every_synchronous_mode_writes(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.db"
    with AuditService(db_path=path, synchronous=mode) as svc:
        assert svc.settings.synchronous == mode.upper()

        @audit_tool_sync(service=svc)
        def tool(n: int) -> int:
            return n

        for i in range(5):
            tool(i)
    assert disk_count(path) == 5
