"""OtlpSink: a replica's committed rows as OTLP log records, over OTLP/HTTP protobuf.

For users whose logs already flow through an OpenTelemetry Collector. Rows
come from the durable buffer under the forwarder's cursor discipline, so a
collector that is down, slow or refusing only makes the backlog wait; nothing
is dropped here, and every failure raises (the OpenTelemetry SDK's batch
processor drops on overflow with one warning line; this sink never drops).

Delivery is **at least once**. OTLP has no idempotence key, so a batch the
collector accepted can be sent again: after a crash between a successful
export and the cursor advance (at most that one batch), or when the answer to
an accepted request is lost (a timeout, a reset). Downstream may then see
those records twice; each carries ``finops_audit.event_id`` (32 hex digits,
unique across the fleet) to deduplicate on. Within one process the sink
remembers how far each buffer was exported, so a batch that fails half-way
(``send`` splits it into several requests) is resumed, not repeated.

Errors, all :class:`OtlpExportError` (an ``AuditStorageError``)::

    retryable=True   connection refused/reset, timeout, HTTP 429/502/503/504
                     (``retry_after`` from the Retry-After header, if any)
    retryable=False  any other HTTP status (the collector rejected the batch),
                     or a partial success with rejected records (``rejected``);
                     ``retry_after`` is then ``rejection_wait`` (60 s)

The OTLP specification says not to retry a rejection; dropping is not an
option here, so the rows are sent again, but only after ``rejection_wait``: a
partially rejected batch sent again duplicates its accepted part downstream.
The sink itself holds back for ``retry_after`` (``send`` raises at once
meanwhile), whoever calls it and however often.

Attribute names follow the OpenTelemetry MCP semantic conventions where one
exists (``gen_ai.tool.name``, ``gen_ai.operation.name``, ``mcp.method.name``,
``mcp.session.id``, ``jsonrpc.request.id``, ``error.type``); the audit fields
have no convention and live under ``finops_audit.*``. ``client.*`` is the
network peer in the conventions (``client.address``), so the MCP client's
name and version are ``finops_audit.client.name`` / ``.version``. Labels are
flattened to ``finops_audit.label.<key>``, as the conventions do for maps
(``k8s.pod.label.<key>``), because most log back ends index flat keys only.
"""

from __future__ import annotations

import functools
import gzip
import http.client
import logging
import math
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import orjson

from .._envelope import without_ciphertext
from ..exceptions import AuditClosedError, AuditConfigError, AuditStorageError
from ._otlp_encode import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
    add_record,
    chunks,
    encode_logs,
    error_type,
    library_version,
    scope_logs,
)
from .base import BufferedRow, ReplicaInfo

__all__ = ["OtlpExportError", "OtlpSink", "encode_logs", "error_type", "logs_url"]

logger = logging.getLogger(__name__)

#: HTTP statuses the OTLP/HTTP specification calls retryable.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class OtlpExportError(AuditStorageError):
    """An OTLP export request failed; the batch was not (wholly) accepted.

    ``retry_after`` is how many seconds to wait before sending again: the
    collector's Retry-After (``None`` when it sent none), or the sink's
    ``rejection_wait`` after a rejection. ``retryable`` is ``False`` when the
    collector rejected the data itself (4xx other than 429, partial success),
    where sending the same batch again will most likely fail the same way.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = True,
        rejected: int = 0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable
        self.rejected = rejected


def logs_url(endpoint: str) -> str:
    """``http://host:4318`` -> ``http://host:4318/v1/logs``; a ``/v1/logs`` URL stays."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/logs") else base + "/v1/logs"


def _retry_after(value: str | None) -> float | None:
    """Seconds of a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _status_message(body: bytes, content_type: str) -> str:
    """The ``message`` of a google.rpc.Status error body (protobuf or JSON), else its text."""
    if not body:
        return ""
    if "json" in content_type:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return _short(doc["message"])
    elif "protobuf" in content_type:
        # google.rpc.Status {int32 code = 1; string message = 2; repeated Any details = 3}
        # (not in opentelemetry-proto) has the wire layout of ExportLogsPartialSuccess's
        # {int64 rejected_log_records = 1; string error_message = 2}: parse it as that.
        status = ExportLogsPartialSuccess()
        try:
            status.ParseFromString(body)
        except Exception:  # DecodeError: not a Status after all
            pass
        else:
            return _short(status.error_message)
    return _short(body.decode("utf-8", "replace"))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OtlpSink:
    """Exports rows as OTLP log records to ``{endpoint}/v1/logs`` (OTLP/HTTP protobuf).

    One kept-alive connection (stdlib ``http.client``), used by the forwarder
    thread; ``timeout`` bounds the connect and each read. A batch is split into
    requests of at most ``max_records`` records and about ``max_request_bytes``
    (a collector refuses large bodies: 20 MiB by default); ``send`` returns
    only when every request was accepted. Bodies above ``gzip_min_bytes`` are
    gzipped at level 1 (``None``: never): measured, a record's ~650 bytes
    shrink 6-7x for 3-8 µs of CPU, which any network slower than about
    1 Gbit/s repays (level 6: 7-8x for 6-9 µs). After a rejection the same
    rows are held back ``rejection_wait`` seconds (see the module docstring).
    """

    name = "otlp"

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        service_name: str = "finops-audit",
        max_records: int = 1000,
        max_request_bytes: int = 4 * 1024 * 1024,
        gzip_min_bytes: int | None = 64 * 1024,
        rejection_wait: float = 60.0,
        encrypted_fields: str = "ciphertext",
    ) -> None:
        url = logs_url(endpoint.strip())
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AuditConfigError(
                f"otlp_endpoint must be an http:// or https:// URL, got {parts.scheme or url!r}"
            )
        if parts.username is not None or parts.password is not None:
            raise AuditConfigError(
                "otlp_endpoint must not hold credentials; "
                "pass them in otlp_headers (Authorization=...)"
            )
        if timeout <= 0:
            raise AuditConfigError(f"timeout must be > 0, got {timeout!r}")
        if max_records < 1:
            raise AuditConfigError(f"max_records must be >= 1, got {max_records!r}")
        if encrypted_fields not in ("ciphertext", "omit"):
            raise AuditConfigError(
                f"encrypted_fields must be 'ciphertext' or 'omit', got {encrypted_fields!r}"
            )
        # AUDIT_OTLP_ENCRYPTED_FIELDS=omit: encrypted values leave as a marker, never bytes
        self._omit_encrypted = encrypted_fields == "omit"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self._timeout = timeout
        self._service_name = service_name
        self._max_records = max_records
        self._max_bytes = max_request_bytes
        self._gzip_min = gzip_min_bytes
        self._rejection_wait = rejection_wait
        self._held: OtlpExportError | None = None  # the failure that asked for a pause
        self._held_until = 0.0
        self._headers = _request_headers(headers or {})
        self._version = library_version()
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._closed = False
        # buffer_id -> (seq, event_id) of the last row this process saw accepted:
        # a batch sent again resumes after it instead of repeating the accepted part.
        self._exported: dict[str, tuple[int, str]] = {}
        self._last_warning = 0.0

    def describe(self) -> str:
        """The logs URL, without credentials (none are allowed in it)."""
        return f"OTLP {self._url}"

    def __repr__(self) -> str:
        return f"<OtlpSink {self._url}>"

    def send(self, replica: ReplicaInfo, rows: Sequence[BufferedRow], prev_hash: str) -> None:
        """Export ``rows`` as log records; return only when the collector accepted all."""
        if self._closed:
            raise AuditClosedError(f"{self.describe()}: the sink was closed")
        self._check_hold()
        rows = self._not_yet_exported(replica, rows)
        if self._omit_encrypted:
            rows = [without_ciphertext(row) for row in rows]
        for chunk in chunks(rows, self._max_records, self._max_bytes):
            request, scope = scope_logs(replica, self._service_name, self._version)
            observed = time.time_ns()
            records = scope.log_records
            for row in chunk:
                add_record(records, row, observed)
            try:
                self._export(request.SerializeToString(), len(chunk))
            except OtlpExportError as exc:
                if exc.retry_after:
                    self._held, self._held_until = exc, time.monotonic() + exc.retry_after
                raise
            self._exported[replica.buffer_id] = (chunk[-1].seq, chunk[-1].event_id)

    def _check_hold(self) -> None:
        """Raise at once while a Retry-After or a rejection asks for a pause."""
        held = self._held
        if held is None:
            return
        left = self._held_until - time.monotonic()
        if left <= 0:
            self._held = None
            return
        raise OtlpExportError(
            f"{held}; not sent again for another {left:.1f} s",
            status=held.status,
            retry_after=left,
            retryable=held.retryable,
            rejected=held.rejected,
        )

    def _not_yet_exported(
        self, replica: ReplicaInfo, rows: Sequence[BufferedRow]
    ) -> Sequence[BufferedRow]:
        """``rows`` after the last one this process saw accepted, when they repeat it.

        Matched on seq *and* event_id, so a reused id can never hide a new row.
        """
        mark = self._exported.get(replica.buffer_id)
        if mark is None or not rows or rows[0].seq > mark[0]:
            return rows
        for i, row in enumerate(rows):
            if row.seq >= mark[0]:
                return rows[i + 1 :] if row.seq == mark[0] and row.event_id == mark[1] else rows
        return rows

    def close(self) -> None:
        """Close the connection. Safe to call twice; ``send`` refuses afterwards."""
        self._closed = True
        self._drop()

    # ------------------------------------------------------------------ HTTP

    def _export(self, body: bytes, count: int) -> None:
        headers = dict(self._headers)
        if self._gzip_min is not None and len(body) > self._gzip_min:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        status, reason, answer, data = self._post(body, headers)
        content_type = (answer.get("Content-Type") or "").lower()
        if 200 <= status < 300:
            self._check_partial(data, content_type, count)
            return
        detail = _status_message(data, content_type)
        detail = f": {detail}" if detail else ""
        if status in RETRYABLE_STATUSES:
            retry_after = _retry_after(answer.get("Retry-After"))
            wait = f", retry after {retry_after:g} s" if retry_after is not None else ""
            raise OtlpExportError(
                f"{self.describe()} is unavailable (HTTP {status} {reason}{wait}){detail}",
                status=status,
                retry_after=retry_after,
            )
        raise OtlpExportError(
            f"{self.describe()} rejected a batch of {count} records "
            f"(HTTP {status} {reason}){detail}",
            status=status,
            retry_after=self._rejection_wait,
            retryable=False,
        )

    def _check_partial(self, data: bytes, content_type: str, count: int) -> None:
        """Raise on rejected records; warn (at most once a minute) on a bare message."""
        if not data:
            return
        rejected, message = 0, ""
        if "json" in content_type:
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                return
            partial = doc.get("partialSuccess") if isinstance(doc, dict) else None
            if isinstance(partial, dict):
                try:
                    rejected = int(partial.get("rejectedLogRecords") or 0)
                except (TypeError, ValueError):
                    rejected = 0
                message = str(partial.get("errorMessage") or "")
        else:
            response = ExportLogsServiceResponse()
            try:
                response.ParseFromString(data)
            except Exception:  # DecodeError: a 2xx with a body we cannot read
                return
            rejected = response.partial_success.rejected_log_records
            message = response.partial_success.error_message
        if rejected > 0:
            raise OtlpExportError(
                f"{self.describe()} rejected {rejected} of {count} records"
                + (f": {_short(message)}" if message else ""),
                status=200,
                retry_after=self._rejection_wait,
                retryable=False,
                rejected=rejected,
            )
        if message and time.monotonic() - self._last_warning > 60:
            self._last_warning = time.monotonic()
            logger.warning("%s accepted a batch with a warning: %s", self.describe(), message)

    def _post(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, http.client.HTTPMessage, bytes]:
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
            ) as exc:
                self._drop()
                if reused and attempt == 1:
                    continue  # the collector closed an idle kept-alive connection
                raise self._connection_error(exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise self._connection_error(exc) from exc
            if response.will_close:
                self._drop()
            return response.status, response.reason, response.headers, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection_error(self, exc: BaseException) -> OtlpExportError:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self._timeout:g} s"
        elif isinstance(exc, ConnectionRefusedError):
            reason = "connection refused (is the collector running?)"
        elif isinstance(exc, ssl.SSLError):
            reason = f"TLS error: {exc}"
        else:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return OtlpExportError(f"{self.describe()} could not be reached: {reason}")

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._closed:
                raise AuditClosedError(f"{self.describe()}: the sink was closed")
            if self._conn is not None:
                return self._conn, True
            conn: http.client.HTTPConnection
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=_tls_context()
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._conn = conn
            return conn, False

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """The system's trust store, loaded once (it costs milliseconds)."""
    return ssl.create_default_context()


_RESERVED = frozenset({"content-type", "content-encoding", "content-length", "host"})


def _request_headers(extra: Mapping[str, str]) -> dict[str, str]:
    """Fixed headers plus the user's; a value is never echoed in an error (it may be a token)."""
    headers = {"User-Agent": f"finops-audit/{library_version()}"}
    for key, value in extra.items():
        if not key or any(c in key for c in "\r\n:") or key != key.strip():
            raise AuditConfigError(f"otlp_headers: invalid header name {key!r}")
        if any(c in value for c in "\r\n\0"):
            raise AuditConfigError(f"otlp_headers: the value of {key!r} holds a line break")
        if key.lower() in _RESERVED:
            continue
        if key.lower() == "user-agent":
            headers.pop("User-Agent", None)
        headers[key] = value
    headers["Content-Type"] = "application/x-protobuf"
    return headers
