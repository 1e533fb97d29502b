"""The public names and shapes the issue promises to users."""

from __future__ import annotations

import importlib
from datetime import datetime, timedelta, timezone
from enum import Enum

import pytest

import finops_audit
from finops_audit import (
    AuditClosedError,
    AuditConfigError,
    AuditError,
    AuditLogEntry,
    AuditQueueFullError,
    AuditService,
    AuditStatus,
    AuditStorageError,
    AuditTimeoutError,
    audit_tool_sync,
)


def test_promised_names_are_importable_and_exported() -> None:
    for name in ("AuditLogEntry", "AuditService", "AuditStatus", "audit_tool", "audit_tool_sync"):
        assert name in finops_audit.__all__
        assert getattr(finops_audit, name) is not None


def test_all_is_sorted_and_every_name_importable() -> None:
    assert finops_audit.__all__ == sorted(finops_audit.__all__)
    assert len(set(finops_audit.__all__)) == len(finops_audit.__all__)
    module = importlib.import_module("finops_audit")
    for name in finops_audit.__all__:
        assert hasattr(module, name), name


def test_version_is_a_string() -> None:
    assert isinstance(finops_audit.__version__, str)
    assert finops_audit.__version__


def test_audit_status_is_a_string_enum() -> None:
    assert issubclass(AuditStatus, str)
    assert issubclass(AuditStatus, Enum)
    assert [s.value for s in AuditStatus] == ["SUCCESS", "FAILURE"]
    assert AuditStatus.SUCCESS == "SUCCESS"
    assert AuditStatus.FAILURE == "FAILURE"
    assert AuditStatus("FAILURE") is AuditStatus.FAILURE
    assert str(AuditStatus.SUCCESS) == "SUCCESS"
    assert f"{AuditStatus.FAILURE}" == "FAILURE"


def test_exceptions_share_one_root_and_match_builtins() -> None:
    assert issubclass(AuditConfigError, AuditError)
    assert issubclass(AuditConfigError, ValueError)
    assert issubclass(AuditClosedError, AuditError)
    assert issubclass(AuditClosedError, RuntimeError)
    assert issubclass(AuditQueueFullError, AuditError)
    assert issubclass(AuditQueueFullError, RuntimeError)
    assert issubclass(AuditTimeoutError, AuditError)
    assert issubclass(AuditTimeoutError, TimeoutError)
    assert issubclass(AuditStorageError, AuditError)
    assert issubclass(AuditStorageError, OSError)


def test_log_entry_fields() -> None:
    # The design note's seven fields come first and keep their names; the
    # caller fields (issue 4) and the fleet identity (issue 6) follow.
    assert list(AuditLogEntry.model_fields)[:7] == [
        "id",
        "timestamp",
        "tool_name",
        "parameters",
        "status",
        "error_message",
        "execution_time_ms",
    ]
    assert set(list(AuditLogEntry.model_fields)[7:]) == {
        "user",
        "client_name",
        "client_version",
        "session_id",
        "request_id",
        "auth_client_id",
        "trace_id",
        "span_id",
        "labels",
        "event_id",
        "replica_id",
    }


def test_log_entry_normalises_timestamps_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    entry = AuditLogEntry(
        id=1,
        timestamp=datetime(2026, 11, 28, 6, 0, tzinfo=plus_two),
        tool_name="t",
        parameters={},
        status="SUCCESS",
    )
    assert entry.timestamp == datetime(2026, 11, 28, 4, 0, tzinfo=timezone.utc)
    assert entry.timestamp.utcoffset() == timedelta(0)
    assert entry.status is AuditStatus.SUCCESS
    assert entry.error_message is None


def test_recorded_entries_have_the_promised_types(svc: AuditService) -> None:
    @audit_tool_sync(service=svc)
    def set_region(region: str) -> None:
        raise ValueError("bad region")

    @audit_tool_sync(service=svc)
    def list_policies(region: str) -> list[str]:
        return [region]

    before = datetime.now(timezone.utc)
    with pytest.raises(ValueError, match="bad region"):
        set_region("mars-1")
    assert list_policies("eu-west-1") == ["eu-west-1"]
    after = datetime.now(timezone.utc)

    ok, failed = svc.get_logs()
    for entry in (ok, failed):
        assert isinstance(entry, AuditLogEntry)
        assert isinstance(entry.id, int)
        assert isinstance(entry.timestamp, datetime)
        assert entry.timestamp.tzinfo is not None
        assert entry.timestamp.utcoffset() == timedelta(0)
        assert before - timedelta(milliseconds=1) <= entry.timestamp <= after
        assert isinstance(entry.parameters, dict)
        assert type(entry.execution_time_ms) is float
        assert entry.execution_time_ms >= 0
    assert ok.tool_name == "list_policies"
    assert ok.status is AuditStatus.SUCCESS
    assert ok.parameters == {"region": "eu-west-1"}
    assert ok.error_message is None
    assert failed.tool_name == "set_region"
    assert failed.status is AuditStatus.FAILURE
    assert failed.parameters == {"region": "mars-1"}
    assert failed.error_message == "ValueError: bad region"
    assert failed.timestamp <= ok.timestamp


def test_service_repr_and_db_path(svc: AuditService, db_path) -> None:
    assert svc.db_path == db_path
    assert "open" in repr(svc)
    svc.close()
    assert svc.closed
    assert "closed" in repr(svc)
