"""OtlpSink against a real local OTLP/HTTP receiver, with rows from a real SQLite trail."""

from __future__ import annotations

import calendar
import contextlib
import logging
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import finops_audit
from finops_audit import (
    AuditClosedError,
    AuditConfigError,
    AuditService,
    AuditStorageError,
    audit_context,
    audit_tool_sync,
)
from finops_audit.forwarding.base import BUFFER_COLUMNS, BufferedRow, ForwardSink, ReplicaInfo
from finops_audit.forwarding.otlp import OtlpExportError, OtlpSink, error_type, logs_url

from .receiver import OtlpReceiver

REPLICA = ReplicaInfo(replica_id="replica-a", buffer_id="b" * 32, legacy_through=0)
GENESIS = "0" * 64


# ------------------------------------------------------------------ building a real trail


def read_rows(path: Path) -> list[BufferedRow]:
    """The buffer's rows as the forwarder reads them: plain sqlite3, BUFFER_COLUMNS order."""
    columns = ", ".join(f'"{c}"' for c in BUFFER_COLUMNS)
    conn = sqlite3.connect(path)
    try:
        raw = conn.execute(f"SELECT {columns} FROM audit_logs ORDER BY id").fetchall()
    finally:
        conn.close()
    return [BufferedRow(*r) for r in raw]


def write_trail(path: Path, calls: Callable[[AuditService], None]) -> list[BufferedRow]:
    with AuditService(db_path=path) as svc:
        calls(svc)
        svc.flush()
    return read_rows(path)


def tools(svc: AuditService) -> tuple[Callable[..., Any], Callable[..., Any]]:
    @audit_tool_sync(service=svc)
    def get_costs(region: str, days: int = 30) -> dict[str, Any]:
        return {"region": region, "days": days}

    @audit_tool_sync(service=svc)
    def check_tags(resource: str) -> None:
        raise ValueError(f"untagged resource {resource}")

    return get_costs, check_tags


@pytest.fixture
def trail(tmp_path: Path) -> list[BufferedRow]:
    """Two rows: a success with every caller field and labels, a failure with none."""

    def calls(svc: AuditService) -> None:
        get_costs, check_tags = tools(svc)
        with audit_context(
            user="alice",
            client_name="claude-desktop",
            client_version="1.2.3",
            session_id="sess-1",
            request_id=42,
            auth_client_id="oauth-client-9",
            team="finops",
            ticket="FIN-7",
        ):
            get_costs("eu-west-1", days=7)
        with contextlib.suppress(ValueError):
            check_tags("i-123")

    return write_trail(tmp_path / "trail.db", calls)


@pytest.fixture
def sink(otlp_receiver: OtlpReceiver) -> Iterator[OtlpSink]:
    s = OtlpSink(otlp_receiver.url)
    yield s
    s.close()


def expected_nanos(text: str) -> int:
    """Independent of the sink's arithmetic: calendar.timegm plus the microseconds."""
    value = datetime.fromisoformat(text)
    return calendar.timegm(value.utctimetuple()) * 1_000_000_000 + value.microsecond * 1_000


# ------------------------------------------------------------------ encoding


def test_is_a_forward_sink(sink: OtlpSink, otlp_receiver: OtlpReceiver) -> None:
    assert isinstance(sink, ForwardSink)
    assert sink.name == "otlp"
    assert sink.describe() == f"OTLP {otlp_receiver.url}/v1/logs"


def test_every_field_of_a_success(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    row = trail[0]._replace(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7")
    before = time.time_ns()
    sink.send(REPLICA, [row], GENESIS)
    after = time.time_ns()
    [got] = otlp_receiver.records
    rec = got.record

    assert got.resource == {
        "service.name": "finops-audit",
        "service.instance.id": "replica-a",
        "finops_audit.replica_id": "replica-a",
        "finops_audit.buffer_id": "b" * 32,
    }
    assert (got.scope_name, got.scope_version) == ("finops_audit", finops_audit.__version__)
    assert rec.time_unix_nano == expected_nanos(row.timestamp)
    assert rec.time_unix_nano % 1_000 == 0
    assert before <= rec.observed_time_unix_nano <= after
    assert (rec.severity_number, rec.severity_text) == (9, "INFO")
    assert rec.trace_id == bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
    assert rec.span_id == bytes.fromhex("00f067aa0ba902b7")
    assert row.execution_time_ms is not None
    assert rec.body.string_value == f"tools/call get_costs SUCCESS {row.execution_time_ms:.1f} ms"
    assert got.attributes == {
        "gen_ai.tool.name": "get_costs",
        "gen_ai.operation.name": "execute_tool",
        "mcp.method.name": "tools/call",
        "mcp.session.id": "sess-1",
        "jsonrpc.request.id": "42",
        "finops_audit.event_id": row.event_id,
        "finops_audit.seq": row.seq,
        "finops_audit.status": "SUCCESS",
        "finops_audit.execution_time_ms": row.execution_time_ms,
        "finops_audit.parameters": row.parameters,
        "finops_audit.row_hash": row.row_hash,
        "finops_audit.user": "alice",
        "finops_audit.client.name": "claude-desktop",
        "finops_audit.client.version": "1.2.3",
        "finops_audit.auth_client_id": "oauth-client-9",
        "finops_audit.label.team": "finops",
        "finops_audit.label.ticket": "FIN-7",
    }
    assert len(row.event_id) == 32
    assert row.row_hash is not None
    assert isinstance(got.attributes["finops_audit.execution_time_ms"], float)
    assert '"region":"eu-west-1"' in got.attributes["finops_audit.parameters"]


def test_a_failure_and_omitted_nones(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    row = trail[1]
    assert row.user is None
    assert row.session_id is None
    assert row.trace_id is None
    sink.send(REPLICA, [row], GENESIS)
    [got] = otlp_receiver.records
    rec = got.record
    assert (rec.severity_number, rec.severity_text) == (17, "ERROR")
    assert rec.time_unix_nano == expected_nanos(row.timestamp)
    assert rec.trace_id == b""
    assert rec.span_id == b""
    assert rec.body.string_value.startswith("tools/call check_tags FAILURE ")
    assert rec.body.string_value.endswith(" ms (ValueError)")
    assert got.attributes == {
        "gen_ai.tool.name": "check_tags",
        "gen_ai.operation.name": "execute_tool",
        "mcp.method.name": "tools/call",
        "error.type": "ValueError",
        "finops_audit.event_id": row.event_id,
        "finops_audit.seq": row.seq,
        "finops_audit.status": "FAILURE",
        "finops_audit.execution_time_ms": row.execution_time_ms,
        "finops_audit.error_message": "ValueError: untagged resource i-123",
        "finops_audit.parameters": row.parameters,
        "finops_audit.row_hash": row.row_hash,
    }


def test_minimal_row_without_time_or_hash(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    row = trail[1]._replace(execution_time_ms=None, row_hash=None, error_message=None, labels=None)
    sink.send(REPLICA, [row], GENESIS)
    [got] = otlp_receiver.records
    assert got.record.body.string_value == "tools/call check_tags FAILURE (tool_error)"
    attributes = got.attributes
    for key in ("finops_audit.execution_time_ms", "finops_audit.row_hash"):
        assert key not in attributes
    assert "finops_audit.error_message" not in attributes
    assert attributes["error.type"] == "tool_error"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("ValueError: bad region", "ValueError"),
        ("botocore.exceptions.ClientError: denied", "botocore.exceptions.ClientError"),
        ("Outer.Inner: x: y", "Outer.Inner"),
        ("KeyboardInterrupt", "KeyboardInterrupt"),
        ("make.<locals>.LocalError: boom", "make.<locals>.LocalError"),
        ("the tool returned an error result", "tool_error"),
        ("", "tool_error"),
        (None, "tool_error"),
        ("3 errors: x", "tool_error"),
    ],
)
def test_error_type(message: str | None, expected: str) -> None:
    assert error_type(message) == expected


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e473", "00f067aa0ba902b"),  # too short
        ("zz" * 16, "zz" * 8),  # not hex
        ("0" * 32, "0" * 16),  # all zero: invalid in W3C trace context
    ],
)
def test_invalid_trace_ids_are_kept_as_attributes(
    sink: OtlpSink,
    otlp_receiver: OtlpReceiver,
    trail: list[BufferedRow],
    trace_id: str,
    span_id: str,
) -> None:
    sink.send(REPLICA, [trail[0]._replace(trace_id=trace_id, span_id=span_id)], GENESIS)
    [got] = otlp_receiver.records
    assert got.record.trace_id == b""
    assert got.record.span_id == b""
    assert got.attributes["finops_audit.trace_id"] == trace_id
    assert got.attributes["finops_audit.span_id"] == span_id


def test_unicode_survives_and_lone_surrogates_do_not_jam(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    def calls(svc: AuditService) -> None:
        @audit_tool_sync(service=svc, name="coût_日本")
        def tool(note: str) -> None:
            pass

        with audit_context(user="zoë 🚀", équipe="données"):
            tool("naïve — ✓ 𝄞")

    [row] = write_trail(tmp_path / "u.db", calls)
    hostile = row._replace(seq=row.seq + 1, event_id="c" * 32, user="bad \ud800 user")
    sink.send(REPLICA, [row, hostile], GENESIS)
    first, second = otlp_receiver.records
    attributes = first.attributes
    assert attributes["gen_ai.tool.name"] == "coût_日本"
    assert attributes["finops_audit.user"] == "zoë 🚀"
    assert attributes["finops_audit.label.équipe"] == "données"
    assert attributes["finops_audit.parameters"] == row.parameters
    assert "naïve — ✓ 𝄞" in attributes["finops_audit.parameters"]
    assert first.record.body.string_value.startswith("tools/call coût_日本 SUCCESS")
    assert second.attributes["finops_audit.user"] == "bad \\ud800 user"
    assert second.attributes["finops_audit.parameters"] == row.parameters
    assert second.attributes["finops_audit.label.équipe"] == "données"


def test_labels_with_json_escaped_surrogates(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    text = '{"k\\ud800": "v"}'
    sink.send(REPLICA, [trail[0]._replace(labels=text)], GENESIS)
    [got] = otlp_receiver.records
    assert got.attributes["finops_audit.labels"] == text


def test_labels_that_are_not_an_object(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    sink.send(REPLICA, [trail[0]._replace(labels="not json")], GENESIS)
    attributes = otlp_receiver.records[0].attributes
    assert attributes["finops_audit.labels"] == "not json"
    assert not any(k.startswith("finops_audit.label.") for k in attributes)


def test_timestamps_exact_across_a_range(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    texts = [
        "1970-01-01T00:00:00.000001+00:00",
        "1999-12-31T23:59:59.999999+00:00",
        "2024-02-29T12:00:00.123456+00:00",
        "2038-01-19T03:14:08.000000+00:00",
        "2262-04-11T23:47:16.854775+00:00",  # near the top of int64 nanoseconds
    ]
    rows = [
        trail[0]._replace(seq=i + 1, event_id=f"{i:032x}", timestamp=t) for i, t in enumerate(texts)
    ]
    sink.send(REPLICA, rows, GENESIS)
    got = [r.record.time_unix_nano for r in otlp_receiver.records]
    assert got == [expected_nanos(t) for t in texts]
    assert got[0] == 1_000


def test_unreadable_timestamp_is_kept_as_attribute(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    texts = ["yesterday", "1969-12-31T23:59:59.000000+00:00"]
    rows = [trail[0]._replace(seq=i + 1, timestamp=t) for i, t in enumerate(texts)]
    sink.send(REPLICA, rows, GENESIS)
    for got, text in zip(otlp_receiver.records, texts, strict=True):
        assert got.record.time_unix_nano == 0  # "unknown" in the log data model
        assert got.attributes["finops_audit.timestamp"] == text


# ------------------------------------------------------------------ requests


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://h:4318", "http://h:4318/v1/logs"),
        ("http://h:4318/", "http://h:4318/v1/logs"),
        ("http://h:4318/v1/logs", "http://h:4318/v1/logs"),
        ("https://h/otlp", "https://h/otlp/v1/logs"),
    ],
)
def test_logs_url(endpoint: str, url: str) -> None:
    assert logs_url(endpoint) == url


@pytest.mark.parametrize("suffix", ["", "/", "/v1/logs"])
def test_endpoint_forms_reach_v1_logs(
    otlp_receiver: OtlpReceiver, trail: list[BufferedRow], suffix: str
) -> None:
    sink = OtlpSink(otlp_receiver.url + suffix)
    try:
        sink.send(REPLICA, trail, GENESIS)
    finally:
        sink.close()
    assert [r.path for r in otlp_receiver.requests] == ["/v1/logs"]
    assert len(otlp_receiver) == 2


def many(trail: list[BufferedRow], count: int, first: int = 100) -> list[BufferedRow]:
    """``count`` distinct rows (seq from ``first``, event_id) shaped like the real ones."""
    return [
        trail[i % 2]._replace(seq=first + i, event_id=f"{first + i:032x}") for i in range(count)
    ]


def test_a_batch_is_split_into_requests(
    otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    rows = many(trail, 2_500)
    sink = OtlpSink(otlp_receiver.url, max_records=1_000)
    try:
        sink.send(REPLICA, rows, GENESIS)
    finally:
        sink.close()
    assert [r.records for r in otlp_receiver.requests] == [1_000, 1_000, 500]
    assert otlp_receiver.event_ids() == [r.event_id for r in rows]
    assert otlp_receiver.connections == 1  # one kept-alive connection


def test_large_rows_split_by_size(otlp_receiver: OtlpReceiver, trail: list[BufferedRow]) -> None:
    big = '{"blob":"' + "x" * 50_000 + '"}'
    rows = [r._replace(parameters=big) for r in many(trail, 30)]
    sink = OtlpSink(otlp_receiver.url, max_request_bytes=256 * 1024)
    try:
        sink.send(REPLICA, rows, GENESIS)
    finally:
        sink.close()
    sizes = [r.records for r in otlp_receiver.requests]
    assert sum(sizes) == 30
    assert len(sizes) > 1
    assert max(sizes) <= 5
    assert [r.attributes["finops_audit.parameters"] for r in otlp_receiver.records] == [big] * 30


def test_gzip_above_threshold(otlp_receiver: OtlpReceiver, trail: list[BufferedRow]) -> None:
    sink = OtlpSink(otlp_receiver.url)
    try:
        sink.send(REPLICA, trail, GENESIS)  # small: plain
        sink.send(REPLICA, many(trail, 1_000), GENESIS)  # ~600 KB: gzipped
    finally:
        sink.close()
    small, large = otlp_receiver.requests
    assert "content-encoding" not in small.headers
    assert large.headers["content-encoding"] == "gzip"
    assert large.records == 1_000
    assert large.body_size < 200_000
    assert len(otlp_receiver) == 1_002


def test_headers_are_sent(otlp_receiver: OtlpReceiver, trail: list[BufferedRow]) -> None:
    sink = OtlpSink(
        otlp_receiver.url,
        headers={"Authorization": "Bearer s3cret", "X-Tenant": "acme", "content-type": "text/x"},
    )
    try:
        sink.send(REPLICA, trail, GENESIS)
    finally:
        sink.close()
    [request] = otlp_receiver.requests
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["user-agent"] == f"finops-audit/{finops_audit.__version__}"


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer s3cret\r\nX-Evil: 1"}, {"Bad:Name": "s3cret"}]
)
def test_invalid_headers_refused_without_echoing_values(headers: dict[str, str]) -> None:
    with pytest.raises(AuditConfigError) as info:
        OtlpSink("http://127.0.0.1:4318", headers=headers)
    assert "s3cret" not in str(info.value)


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(AuditConfigError, match="otlp_headers") as info:
        OtlpSink("http://user:pa55word@collector:4318")
    assert "pa55word" not in str(info.value)


def test_not_an_http_url_is_refused() -> None:
    with pytest.raises(AuditConfigError, match="http"):
        OtlpSink("grpc://collector:4317")


# ------------------------------------------------------------------ failures


def test_503_with_retry_after_then_success(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    otlp_receiver.fail_next(1, 503, retry_after="7", message="memory limiter")
    with pytest.raises(OtlpExportError) as info:
        sink.send(REPLICA, trail, GENESIS)
    err = info.value
    assert isinstance(err, AuditStorageError)
    assert isinstance(err, OSError)
    assert (err.status, err.retry_after, err.retryable) == (503, 7.0, True)
    assert "HTTP 503" in str(err)
    assert "retry after 7 s" in str(err)
    assert "memory limiter" in str(err)
    assert len(otlp_receiver) == 0
    # the sink itself honours Retry-After, however soon it is called again
    with pytest.raises(OtlpExportError, match="not sent again for another") as again:
        sink.send(REPLICA, trail, GENESIS)
    assert again.value.retry_after is not None
    assert 0 < again.value.retry_after <= 7
    assert (again.value.status, again.value.retryable) == (503, True)
    assert len(otlp_receiver.requests) == 1


def test_503_then_success(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    otlp_receiver.fail_next(2, 503, retry_after="0")
    for _ in range(2):
        with pytest.raises(OtlpExportError, match="HTTP 503") as info:
            sink.send(REPLICA, trail, GENESIS)
        assert info.value.retry_after == 0.0
    sink.send(REPLICA, trail, GENESIS)
    assert [r.status for r in otlp_receiver.requests] == [503, 503, 200]
    assert otlp_receiver.event_ids() == [r.event_id for r in trail]


@pytest.mark.parametrize("status", [429, 502, 504])
def test_other_retryable_statuses(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow], status: int
) -> None:
    otlp_receiver.fail_next(1, status)
    with pytest.raises(OtlpExportError) as info:
        sink.send(REPLICA, trail, GENESIS)
    assert info.value.retryable
    assert info.value.retry_after is None
    assert info.value.status == status


def test_retry_after_as_http_date(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    otlp_receiver.fail_next(1, 503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    with pytest.raises(OtlpExportError) as info:
        sink.send(REPLICA, trail, GENESIS)
    assert info.value.retry_after == 0.0  # a date in the past: retry now


@pytest.mark.parametrize("status", [400, 401, 413, 500])
def test_rejections_raise_never_drop(
    otlp_receiver: OtlpReceiver, trail: list[BufferedRow], status: int
) -> None:
    otlp_receiver.fail_next(1, status, message="field body is invalid")
    sink = OtlpSink(otlp_receiver.url, rejection_wait=0)
    try:
        expected = f"rejected a batch of 2 records.*HTTP {status}"
        with pytest.raises(OtlpExportError, match=expected) as info:
            sink.send(REPLICA, trail, GENESIS)
        assert not info.value.retryable
        assert info.value.status == status
        assert "field body is invalid" in str(info.value)  # the google.rpc.Status message
        sink.send(REPLICA, trail, GENESIS)  # the same batch goes through once accepted
    finally:
        sink.close()
    assert len(otlp_receiver) == 2


def test_a_rejection_holds_back_sending_again(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    otlp_receiver.fail_next(1, 400)
    with pytest.raises(OtlpExportError) as info:
        sink.send(REPLICA, trail, GENESIS)
    assert info.value.retry_after == 60.0  # rejection_wait: the forwarder waits that long
    with pytest.raises(OtlpExportError, match=r"HTTP 400.*not sent again for another") as again:
        sink.send(REPLICA, trail, GENESIS)
    assert not again.value.retryable
    assert again.value.retry_after is not None
    assert 0 < again.value.retry_after <= 60
    assert len(otlp_receiver.requests) == 1


def test_partial_success_raises(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    otlp_receiver.partial_next(1, "record too large")
    with pytest.raises(OtlpExportError, match="rejected 1 of 2 records: record too large") as info:
        sink.send(REPLICA, trail, GENESIS)
    assert info.value.rejected == 1
    assert not info.value.retryable
    assert info.value.retry_after == 60.0
    # sending again at once would duplicate the accepted record downstream
    with pytest.raises(OtlpExportError, match="not sent again") as again:
        sink.send(REPLICA, trail, GENESIS)
    assert again.value.rejected == 1
    assert len(otlp_receiver.requests) == 1


def test_partial_success_warning_only_is_success(
    sink: OtlpSink,
    otlp_receiver: OtlpReceiver,
    trail: list[BufferedRow],
    caplog: pytest.LogCaptureFixture,
) -> None:
    otlp_receiver.partial_next(0, "deprecated attribute")
    with caplog.at_level(logging.WARNING, logger="finops_audit"):
        sink.send(REPLICA, trail, GENESIS)
    assert len(otlp_receiver) == 2
    assert "deprecated attribute" in caplog.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused(trail: list[BufferedRow]) -> None:
    sink = OtlpSink(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(OtlpExportError, match="connection refused") as info:
            sink.send(REPLICA, trail, GENESIS)
    finally:
        sink.close()
    assert info.value.retryable
    assert info.value.status is None


def test_timeout(otlp_receiver: OtlpReceiver, trail: list[BufferedRow]) -> None:
    sink = OtlpSink(otlp_receiver.url, timeout=0.3)
    try:
        otlp_receiver.slow(30)
        with pytest.raises(OtlpExportError, match=r"no answer within 0\.3 s") as info:
            sink.send(REPLICA, trail, GENESIS)
        assert info.value.retryable
        sink.send(REPLICA, trail, GENESIS)  # a fresh connection, not the timed-out one
    finally:
        sink.close()
    assert otlp_receiver.connections == 2
    assert otlp_receiver.event_ids() == [r.event_id for r in trail]


def test_receiver_restart_on_a_kept_alive_connection(
    otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    sink = OtlpSink(otlp_receiver.url)
    try:
        sink.send(REPLICA, trail[:1], GENESIS)
        otlp_receiver.stop()
        with pytest.raises(OtlpExportError, match="could not be reached"):
            sink.send(REPLICA, trail[1:], GENESIS)
        otlp_receiver.start()  # same port; the sink's old connection is dead
        sink.send(REPLICA, trail[1:], GENESIS)
    finally:
        sink.close()
    assert otlp_receiver.event_ids() == [r.event_id for r in trail]


def test_stale_kept_alive_connection_is_retried_once(
    otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    sink = OtlpSink(otlp_receiver.url)
    try:
        sink.send(REPLICA, trail[:1], GENESIS)
        otlp_receiver.stop()
        otlp_receiver.start()  # the collector restarted while the connection was idle
        sink.send(REPLICA, trail[1:], GENESIS)
    finally:
        sink.close()
    assert otlp_receiver.event_ids() == [r.event_id for r in trail]
    assert otlp_receiver.connections == 2


def test_a_failed_batch_resumes_without_duplicates(
    otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    rows = many(trail, 2_500)
    sink = OtlpSink(otlp_receiver.url, max_records=1_000)
    try:
        sink.send(REPLICA, rows[:10], GENESIS)
        otlp_receiver.fail_next(1, 503, after=1)
        with pytest.raises(OtlpExportError):
            sink.send(REPLICA, rows, GENESIS)  # 990 accepted, then 503
        sink.send(REPLICA, rows, GENESIS)  # the forwarder sends the same rows again
    finally:
        sink.close()
    assert [(r.status, r.records) for r in otlp_receiver.requests] == [
        (200, 10),
        (200, 1_000),
        (503, 0),
        (200, 1_000),
        (200, 490),
    ]
    assert otlp_receiver.event_ids() == [r.event_id for r in rows]


def test_a_reused_seq_with_a_new_event_id_is_sent(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    sink.send(REPLICA, trail, GENESIS)
    reused = [r._replace(event_id=f"{r.seq:032x}") for r in trail]  # same seqs, new rows
    sink.send(REPLICA, reused, GENESIS)
    assert len(otlp_receiver) == 4


def test_another_buffer_is_not_skipped(
    sink: OtlpSink, otlp_receiver: OtlpReceiver, trail: list[BufferedRow]
) -> None:
    sink.send(REPLICA, trail, GENESIS)
    other = ReplicaInfo(replica_id="replica-a", buffer_id="c" * 32, legacy_through=0)
    sink.send(other, trail, GENESIS)  # same seqs, another buffer file: all sent
    assert len(otlp_receiver) == 4


def test_close_twice_and_send_after_close(sink: OtlpSink, trail: list[BufferedRow]) -> None:
    sink.send(REPLICA, trail, GENESIS)
    sink.close()
    sink.close()
    with pytest.raises(AuditClosedError):
        sink.send(REPLICA, trail, GENESIS)


def test_empty_batch_sends_nothing(sink: OtlpSink, otlp_receiver: OtlpReceiver) -> None:
    sink.send(REPLICA, [], GENESIS)
    assert otlp_receiver.requests == []


# ------------------------------------------------------------------ a burst


@pytest.mark.slow
def test_a_50000_row_burst_is_delivered_completely(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """The OpenTelemetry SDK's defaults lost 58% of such a burst; this must lose none."""
    count = 50_000

    def calls(svc: AuditService) -> None:
        get_costs, check_tags = tools(svc)
        for i in range(count):
            if i % 10 == 0:
                with contextlib.suppress(ValueError):
                    check_tags(f"i-{i}")
            else:
                get_costs(f"region-{i % 7}", days=i)

    rows = write_trail(tmp_path / "burst.db", calls)
    assert len(rows) == count
    sink = OtlpSink(otlp_receiver.url)
    try:
        for start in range(0, count, 5_000):  # the forwarder's default batch
            sink.send(REPLICA, rows[start : start + 5_000], GENESIS)
    finally:
        sink.close()
    received = otlp_receiver.wait_for(count, timeout=1)
    ids = [r.attributes["finops_audit.event_id"] for r in received]
    assert len(ids) == count
    assert len(set(ids)) == count
    assert ids == [r.event_id for r in rows]
    assert [r.attributes["finops_audit.seq"] for r in received] == [r.seq for r in rows]
    assert sum(r.record.severity_text == "ERROR" for r in received) == count // 10
    assert len(otlp_receiver.requests) == count // 1_000
