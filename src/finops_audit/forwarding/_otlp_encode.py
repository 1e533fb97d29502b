"""Encoding a replica's buffer rows as OTLP log records (opentelemetry-proto classes).

Kept apart from the HTTP side (:mod:`.otlp`). One record per row: the MCP
semantic-convention attributes where one exists, the audit fields under
``finops_audit.*``; the mapping is described in :mod:`.otlp`'s docstring.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import orjson

from .base import BufferedRow, ReplicaInfo

# The one place opentelemetry-proto is imported: a missing extra says what to install.
try:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsPartialSuccess,
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )
    from opentelemetry.proto.logs.v1.logs_pb2 import (
        SEVERITY_NUMBER_ERROR,
        SEVERITY_NUMBER_INFO,
        LogRecord,
        ScopeLogs,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "OTLP export needs opentelemetry-proto: pip install 'finops-audit[otel]'",
        name=exc.name,
    ) from exc

__all__ = [
    "ExportLogsPartialSuccess",
    "ExportLogsServiceRequest",
    "ExportLogsServiceResponse",
    "add_record",
    "chunks",
    "encode_logs",
    "error_type",
    "library_version",
    "scope_logs",
]

_SCOPE_NAME = "finops_audit"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# "ValueError: bad region", "pkg.CustomError" -> the class; free text -> None.
_ERROR_CLASS = re.compile(r"([A-Za-z_][\w.<>]*)(?::|$)")
# Per-record protobuf overhead beyond the variable texts (keys, numbers, ids).
_RECORD_OVERHEAD = 700


def _unix_nanos(text: str) -> int | None:
    """Nanoseconds since the epoch of a stored timestamp, exact (integer arithmetic)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00", 1) if "Z" in text else text)
    except ValueError:
        return None
    if value.tzinfo is None:  # legacy rows without an offset meant UTC
        value = value.replace(tzinfo=timezone.utc)
    delta = value - _EPOCH
    if delta.days < 0:  # before 1970: not representable (fixed64)
        return None
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _id_bytes(text: str | None, length: int) -> bytes | None:
    """Bytes of a hex trace/span id of ``length`` bytes; ``None`` if invalid or all zero."""
    if text is None or len(text) != 2 * length:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if any(raw) else None


def error_type(error_message: str | None) -> str:
    """``error.type``: the exception class from ``"ValueError: ..."``, else ``tool_error``.

    ``tool_error`` is the MCP convention's value for a tool call whose result
    is an error, which is what a failed call without a parseable class is.
    """
    if error_message:
        match = _ERROR_CLASS.match(error_message)
        if match is not None:
            return match.group(1)
    return "tool_error"


def _template() -> LogRecord:
    """The attributes every record has, in a fixed order, constants filled in.

    ``CopyFrom`` of this and setting values by index is measurably cheaper
    than one ``add()`` per attribute (about 1 µs each with the upb backend).
    """
    record = LogRecord()
    for key in _FIXED_KEYS:
        record.attributes.add(key=key)
    record.attributes[1].value.string_value = "execute_tool"
    record.attributes[2].value.string_value = "tools/call"
    return record


_FIXED_KEYS = (
    "gen_ai.tool.name",
    "gen_ai.operation.name",
    "mcp.method.name",
    "finops_audit.event_id",
    "finops_audit.seq",
    "finops_audit.status",
    "finops_audit.parameters",
)
_TEMPLATE = _template()


def add_record(records: Any, row: BufferedRow, observed_ns: int) -> None:
    """Append ``row`` as a LogRecord to ``records`` (a repeated field), never failing on text.

    Built in place with ``add()``: three times faster than constructing the
    messages and passing them in (measured 62k vs 20k records/s). A lone
    surrogate (protobuf strings must be UTF-8) sends the row again, escaped.
    """
    try:
        _fill(records.add(), row, observed_ns, escape=False)
    except UnicodeEncodeError:
        del records[-1]
        _fill(records.add(), _escaped(row), observed_ns, escape=True)


def _fill(rec: LogRecord, row: BufferedRow, observed_ns: int, *, escape: bool) -> None:
    rec.CopyFrom(_TEMPLATE)
    failed = row.status == "FAILURE"
    nanos = _unix_nanos(row.timestamp)
    if nanos is not None:
        rec.time_unix_nano = nanos
    rec.observed_time_unix_nano = observed_ns
    if failed:
        rec.severity_number = SEVERITY_NUMBER_ERROR
        rec.severity_text = "ERROR"
    else:
        rec.severity_number = SEVERITY_NUMBER_INFO
        rec.severity_text = "INFO"
    trace_id = _id_bytes(row.trace_id, 16)
    if trace_id is not None:
        rec.trace_id = trace_id
    span_id = _id_bytes(row.span_id, 8)
    if span_id is not None:
        rec.span_id = span_id
    err_type = error_type(row.error_message) if failed else None
    body = f"tools/call {row.tool_name} {row.status}"
    if row.execution_time_ms is not None:
        body += f" {row.execution_time_ms:.1f} ms"
    if err_type is not None:
        body += f" ({err_type})"
    rec.body.string_value = body

    attributes = rec.attributes
    attributes[0].value.string_value = row.tool_name
    attributes[3].value.string_value = row.event_id
    attributes[4].value.int_value = row.seq
    attributes[5].value.string_value = row.status
    attributes[6].value.string_value = row.parameters
    add = attributes.add
    for key, value in (
        ("mcp.session.id", row.session_id),
        ("jsonrpc.request.id", row.request_id),
        ("error.type", err_type),
        ("finops_audit.error_message", row.error_message),
        ("finops_audit.row_hash", row.row_hash),
        ("finops_audit.user", row.user),
        ("finops_audit.client.name", row.client_name),
        ("finops_audit.client.version", row.client_version),
        ("finops_audit.auth_client_id", row.auth_client_id),
        # kept as text when they could not be used as a time or as ids
        ("finops_audit.timestamp", row.timestamp if nanos is None else None),
        ("finops_audit.trace_id", row.trace_id if trace_id is None else None),
        ("finops_audit.span_id", row.span_id if span_id is None else None),
    ):
        if value is not None:
            add(key=key).value.string_value = value
    if row.execution_time_ms is not None:
        add(key="finops_audit.execution_time_ms").value.double_value = row.execution_time_ms
    if row.labels:
        try:
            labels = orjson.loads(row.labels)
        except orjson.JSONDecodeError:
            labels = None
        if isinstance(labels, dict):
            for key, value in labels.items():
                text = value if isinstance(value, str) else orjson.dumps(value).decode()
                name = f"finops_audit.label.{key}"
                if escape:  # JSON escapes can hold lone surrogates
                    name, text = _printable(name), _printable(text)
                add(key=name).value.string_value = text
        else:
            add(key="finops_audit.labels").value.string_value = row.labels


def _escaped(row: BufferedRow) -> BufferedRow:
    """``row`` with every text made encodable (lone surrogates as ``\\udXXX``)."""
    return BufferedRow._make(_printable(v) if isinstance(v, str) else v for v in row)


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def scope_logs(
    replica: ReplicaInfo, service_name: str, version: str
) -> tuple[ExportLogsServiceRequest, ScopeLogs]:
    """A request with one resource (the replica) and one scope; records go in the scope."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, value in (
        ("service.name", service_name),
        ("service.instance.id", replica.replica_id),
        ("finops_audit.replica_id", replica.replica_id),
        ("finops_audit.buffer_id", replica.buffer_id),
    ):
        resource_logs.resource.attributes.add(key=key).value.string_value = value
    scope = resource_logs.scope_logs.add()
    scope.scope.name = _SCOPE_NAME
    scope.scope.version = version
    return request, scope


def encode_logs(
    replica: ReplicaInfo,
    rows: Sequence[BufferedRow],
    *,
    service_name: str = "finops-audit",
    observed_ns: int | None = None,
) -> ExportLogsServiceRequest:
    """One ExportLogsServiceRequest holding ``rows``: one resource, one scope."""
    request, scope = scope_logs(replica, service_name, library_version())
    observed = time.time_ns() if observed_ns is None else observed_ns
    records = scope.log_records
    for row in rows:
        add_record(records, row, observed)
    return request


def library_version() -> str:
    """``finops_audit.__version__``, read at call time (no import cycle whatever loads first)."""
    from .. import __version__

    return __version__


def chunks(
    rows: Sequence[BufferedRow], max_records: int, max_bytes: int
) -> Iterator[Sequence[BufferedRow]]:
    """Consecutive slices of at most ``max_records`` rows and about ``max_bytes``."""
    start, size = 0, 0
    for i, row in enumerate(rows):
        cost = _RECORD_OVERHEAD + len(row.parameters) + len(row.error_message or "")
        if i > start and (i - start >= max_records or size + cost > max_bytes):
            yield rows[start:i]
            start, size = i, 0
        size += cost
    if start < len(rows):
        yield rows[start:]
