"""End to end: AuditService(otlp_endpoint=...) exports every entry from its buffer."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from finops_audit import (
    AuditService,
    AuditTimeoutError,
    audit_context,
    audit_tool,
    audit_tool_sync,
)

from .receiver import OtlpReceiver


def buffer_event_ids(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT event_id FROM audit_logs ORDER BY id")]
    finally:
        conn.close()


def make_calls(svc: AuditService, count: int, offset: int = 0) -> None:
    """``count`` decorated calls, one in ten failing."""

    @audit_tool_sync(service=svc)
    def get_costs(region: str, days: int) -> int:
        return days

    @audit_tool_sync(service=svc)
    def check_tags(resource: str) -> None:
        raise ValueError(f"untagged {resource}")

    for i in range(offset, offset + count):
        if i % 10 == 0:
            with contextlib.suppress(ValueError):
                check_tags(f"i-{i}")
        else:
            get_costs("eu-west-1", i)


def assert_exact(receiver: OtlpReceiver, path: Path, count: int) -> None:
    """The receiver holds each buffer entry exactly once, in buffer order."""
    expected = buffer_event_ids(path)
    assert len(expected) == count
    got = receiver.event_ids()
    assert len(got) == len(set(got)) == count
    assert got == expected


@pytest.fixture
def service_factory(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> Iterator[Callable[..., AuditService]]:
    made: list[AuditService] = []

    def make(**overrides: Any) -> AuditService:
        options: dict[str, Any] = {
            "db_path": tmp_path / "buffer.db",
            "otlp_endpoint": otlp_receiver.url,
            "replica_id": "replica-1",
            **overrides,
        }
        svc = AuditService(**options)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def test_forward_exports_every_entry(
    service_factory: Callable[..., AuditService], otlp_receiver: OtlpReceiver
) -> None:
    svc = service_factory()
    with audit_context(user="alice", session_id="s-1", request_id=7, team="finops"):
        make_calls(svc, 300)
    svc.forward(timeout=10)
    assert_exact(otlp_receiver, svc.db_path, 300)
    stats = svc.stats()
    assert stats.forward_lag_entries == 0
    assert stats.forward_last_error is None
    first = otlp_receiver.records[0]
    assert first.resource["service.instance.id"] == "replica-1"
    attributes = first.attributes
    assert attributes["gen_ai.tool.name"] == "check_tags"
    assert attributes["error.type"] == "ValueError"
    assert attributes["mcp.session.id"] == "s-1"
    assert attributes["jsonrpc.request.id"] == "7"
    assert attributes["finops_audit.label.team"] == "finops"
    assert first.record.severity_text == "ERROR"
    assert otlp_receiver.records[1].record.severity_text == "INFO"


def test_receiver_down_then_up(
    service_factory: Callable[..., AuditService], otlp_receiver: OtlpReceiver
) -> None:
    otlp_receiver.stop()
    svc = service_factory()
    make_calls(svc, 200)
    with pytest.raises(AuditTimeoutError):
        svc.forward(timeout=0.5)
    stats = svc.stats()
    assert stats.forward_lag_entries == 200
    assert stats.forward_last_error is not None
    assert "connection refused" in stats.forward_last_error
    make_calls(svc, 100, offset=200)  # the tools go on meanwhile
    otlp_receiver.start()
    svc.forward(timeout=10)
    assert_exact(otlp_receiver, svc.db_path, 300)
    assert svc.stats().forward_lag_entries == 0
    assert svc.stats().forward_last_error is None


def test_retryable_statuses_are_retried(
    service_factory: Callable[..., AuditService], otlp_receiver: OtlpReceiver
) -> None:
    otlp_receiver.fail_next(2, 503, retry_after="0.1")
    otlp_receiver.fail_next(1, 429)
    svc = service_factory()
    make_calls(svc, 50)
    svc.forward(timeout=10)
    assert_exact(otlp_receiver, svc.db_path, 50)
    assert [r.status for r in otlp_receiver.requests] == [503, 503, 429, 200]


def test_a_rejected_batch_waits_in_the_buffer(
    service_factory: Callable[..., AuditService], otlp_receiver: OtlpReceiver
) -> None:
    otlp_receiver.fail_next(1, 400, message="bad attribute")
    svc = service_factory(forward_timeout=0.2)
    make_calls(svc, 50)
    with pytest.raises(AuditTimeoutError):
        svc.forward(timeout=0.5)  # held back for rejection_wait (60 s) after the 400
    error = svc.stats().forward_last_error
    assert error is not None
    assert "rejected a batch of 50 records (HTTP 400" in error
    assert "bad attribute" in error
    svc.close()
    assert len(otlp_receiver) == 0
    again = service_factory()  # the next start sends it
    again.forward(timeout=10)
    assert_exact(otlp_receiver, again.db_path, 50)


def test_close_exports_what_it_can(
    service_factory: Callable[..., AuditService], otlp_receiver: OtlpReceiver
) -> None:
    svc = service_factory()
    make_calls(svc, 500)
    svc.close()
    assert_exact(otlp_receiver, svc.db_path, 500)


def test_close_leaves_the_rest_for_the_next_start(
    service_factory: Callable[..., AuditService], otlp_receiver: OtlpReceiver
) -> None:
    otlp_receiver.stop()
    svc = service_factory(forward_timeout=0.2)
    make_calls(svc, 120)
    svc.close()  # cannot export: the entries stay in the buffer
    assert len(otlp_receiver) == 0
    otlp_receiver.start()
    again = service_factory()
    again.forward(timeout=10)
    assert_exact(otlp_receiver, again.db_path, 120)


@pytest.mark.asyncio
async def test_aforward(
    service_factory: Callable[..., AuditService], otlp_receiver: OtlpReceiver
) -> None:
    svc = service_factory()

    @audit_tool(service=svc)
    async def list_budgets(account: str) -> list[str]:
        return [account]

    for i in range(40):
        await list_budgets(f"acct-{i}")
    await svc.aforward(timeout=10)
    assert_exact(otlp_receiver, svc.db_path, 40)
    await asyncio.to_thread(svc.close)
