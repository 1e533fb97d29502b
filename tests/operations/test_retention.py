"""Retention (AUDIT_RETENTION_DAYS): the writer purges old entries by itself, at start,
leaving a trail that still verifies; reading commands never purge."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from finops_audit import AuditConfigError, AuditService, audit_tool_sync
from finops_audit.cli import main
from tests.helpers import disk_count, disk_rows, wait_until

ONE_SECOND_IN_DAYS = 1 / 86400


def _write(service: AuditService, name: str, count: int) -> None:
    @audit_tool_sync(name=name, service=service)
    def tool(i: int) -> int:
        return i

    for i in range(count):
        tool(i)
    service.flush()


def _wait_older_than(db_path: Path, seconds: float) -> None:
    born = datetime.fromisoformat(max(r["timestamp"] for r in disk_rows(db_path)))
    wait_until(lambda: datetime.now(timezone.utc) - born > timedelta(seconds=seconds))


def test_writer_applies_retention_from_the_environment_at_start(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with AuditService(db_path) as service:
        _write(service, "old", 6)
    _wait_older_than(db_path, 1.2)
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", str(ONE_SECOND_IN_DAYS))
    caplog.set_level(logging.INFO, logger="finops_audit")
    with AuditService(db_path) as service:
        assert service.settings.retention_days == pytest.approx(ONE_SECOND_IN_DAYS)
        _write(service, "new", 1)
        wait_until(lambda: disk_count(db_path) == 1)
        assert [r["tool_name"] for r in disk_rows(db_path)] == ["new"]
        report = service.verify()
        assert (report.ok, report.rows_checked, report.checkpoint_through_id) == (True, 1, 6)
        _write(service, "newer", 2)  # fresh entries are kept
        assert service.count() == 3
        assert service.verify().ok
    assert any("retention" in r.getMessage() for r in caplog.records)


def test_retention_argument_keeps_recent_rows(db_path: Path) -> None:
    with AuditService(db_path) as service:
        _write(service, "recent", 5)
    with AuditService(db_path, retention_days=30) as service:
        _write(service, "more", 1)
        assert service.count() == 6
        assert service.verify().ok


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_invalid_retention_fails_at_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", value)
    with pytest.raises(AuditConfigError, match="AUDIT_RETENTION_DAYS"):
        AuditService("x.db")


def test_reading_commands_never_purge(db_path: Path) -> None:
    with AuditService(db_path) as service:
        _write(service, "old", 4)
    _wait_older_than(db_path, 1.2)
    env = {"AUDIT_RETENTION_DAYS": str(ONE_SECOND_IN_DAYS)}
    runner = CliRunner(env=env)
    for command in (["logs"], ["stats"], ["verify"], ["tail"], ["export", "-"]):
        result = runner.invoke(main, [*command, "--db", str(db_path)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert disk_count(db_path) == 4
