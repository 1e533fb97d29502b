"""A small OTLP/HTTP logs receiver for tests: decodes the protobuf, keeps every record.

It answers like a collector (``ExportLogsServiceResponse``, google.rpc.Status
bodies on errors) and can be told to misbehave: fail the next requests with a
status (and Retry-After), answer a partial success, be slow, or go down and
come back on the same port. Waits are bounded and driven by a Condition.
"""

from __future__ import annotations

import gzip
import http.server
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

__all__ = ["OtlpReceiver", "Received", "ReceivedRequest", "attrs", "status_body"]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return attrs(value.kvlist_value.values)
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind)


def attrs(items: Any) -> dict[str, Any]:
    """Attributes (repeated KeyValue) as a plain dict; fails on a duplicated key."""
    out: dict[str, Any] = {}
    for kv in items:
        assert isinstance(kv, KeyValue)
        assert kv.key not in out, f"duplicated attribute {kv.key!r}"
        out[kv.key] = _value(kv.value)
    return out


def status_body(code: int, message: str) -> bytes:
    """A google.rpc.Status {code, message} encoded by hand (not in opentelemetry-proto)."""
    raw = message.encode()
    return bytes([0x08, code]) + b"\x12" + _varint(len(raw)) + raw


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass
class Received:
    """One log record with its resource and scope."""

    record: LogRecord
    resource: dict[str, Any]
    scope_name: str
    scope_version: str

    @property
    def attributes(self) -> dict[str, Any]:
        return attrs(self.record.attributes)


@dataclass
class ReceivedRequest:
    """One HTTP request as it arrived, and how it was answered."""

    path: str
    headers: dict[str, str]
    body_size: int
    records: int
    status: int


@dataclass
class _Failure:
    status: int
    retry_after: str | None
    message: str


@dataclass
class _State:
    records: list[Received] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # accepted requests, decompressed
    failures: list[_Failure | None] = field(default_factory=list)  # None: answer normally
    partial: list[tuple[int, str]] = field(default_factory=list)
    delay: float = 0.0
    slow_requests: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a collector
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if not owner._before_answer():
            self.close_connection = True  # stopped while being slow: no answer at all
            return
        if self.path != "/v1/logs":
            self._answer(owner, 404, b"", "text/plain", headers, len(body), [])
            return
        if headers.get("content-type") != "application/x-protobuf":
            self._answer(owner, 415, b"", "text/plain", headers, len(body), [])
            return
        failure = owner._next_failure()
        if failure is not None:
            extra = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            self._answer(
                owner,
                failure.status,
                status_body(failure.status // 100, failure.message),
                "application/x-protobuf",
                headers,
                len(body),
                [],
                extra,
            )
            return
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        with owner._cond:
            owner._state.bodies.append(body)
        received = [
            Received(rec, attrs(rl.resource.attributes), sl.scope.name, sl.scope.version)
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for rec in sl.log_records
        ]
        response = ExportLogsServiceResponse()
        partial = owner._next_partial()
        if partial is not None:
            response.partial_success.rejected_log_records = partial[0]
            response.partial_success.error_message = partial[1]
            received = received[partial[0] :]  # the rejected ones are not kept
        self._answer(
            owner,
            200,
            response.SerializeToString(),
            "application/x-protobuf",
            headers,
            length,
            received,
        )

    def _answer(
        self,
        owner: OtlpReceiver,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str],
        size: int,
        received: list[Received],
        extra: dict[str, str] | None = None,
    ) -> None:
        # Kept before answering: once the client has its answer, the test sees it all.
        owner._log(ReceivedRequest(self.path, headers, size, len(received), status), received)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: OtlpReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or a connection cut by stop(): expected here.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class OtlpReceiver:
    """An OTLP/HTTP logs endpoint on 127.0.0.1 (``url``), served from a thread."""

    def __init__(self, port: int = 0) -> None:
        self._cond = threading.Condition()
        self._state = _State()
        self._conns: set[socket.socket] = set()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.connections = 0  # TCP connections accepted so far

    # -------------------------------------------------------------- lifecycle

    def start(self) -> OtlpReceiver:
        """Serve (again), on the same port once one was chosen."""
        assert self._server is None, "already running"
        self._release.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections: the port then refuses. Safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._release.set()  # slow answers end now
        server.shutdown()
        server.server_close()
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -------------------------------------------------------------- behaviour

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        retry_after: str | None = None,
        message: str = "",
        after: int = 0,
    ) -> None:
        """Answer ``count`` requests with ``status`` (nothing is kept), after ``after`` more."""
        failure = _Failure(status, retry_after, message or f"failing with {status}")
        with self._cond:
            self._state.failures.extend([None] * after + [failure] * count)

    def partial_next(self, rejected: int, message: str) -> None:
        """Answer the next request with a partial success rejecting its first records."""
        with self._cond:
            self._state.partial.append((rejected, message))

    def slow(self, seconds: float, requests: int = 1) -> None:
        """Wait ``seconds`` before answering each of the next ``requests`` requests."""
        with self._cond:
            self._state.delay = seconds
            self._state.slow_requests = requests

    # -------------------------------------------------------------- results

    @property
    def records(self) -> list[Received]:
        with self._cond:
            return list(self._state.records)

    @property
    def bodies(self) -> list[bytes]:
        """The bytes of every well-formed export request body (gzip undone)."""
        with self._cond:
            return list(self._state.bodies)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._state.requests)

    def event_ids(self) -> list[str]:
        return [r.attributes["finops_audit.event_id"] for r in self.records]

    def __iter__(self) -> Iterator[Received]:
        return iter(self.records)

    def __len__(self) -> int:
        with self._cond:
            return len(self._state.records)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Records once at least ``count`` arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._state.records) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self._state.records)} of {count} records within {timeout}s"
                    )
                self._cond.wait(left)
            return list(self._state.records)

    def wait_requests(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Requests (answered or not) once at least ``count`` arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._state.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self._state.requests)} of {count} requests within {timeout}s"
                    )
                self._cond.wait(left)
            return list(self._state.requests)

    # -------------------------------------------------------------- handler side

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._conns.add(conn)
                self.connections += 1
            else:
                self._conns.discard(conn)

    def _before_answer(self) -> bool:
        """Be slow if told to; False when the receiver was stopped meanwhile."""
        with self._cond:
            delay = self._state.delay if self._state.slow_requests > 0 else 0.0
            if self._state.slow_requests > 0:
                self._state.slow_requests -= 1
        return not (delay and self._release.wait(delay))

    def _next_failure(self) -> _Failure | None:
        with self._cond:
            return self._state.failures.pop(0) if self._state.failures else None

    def _next_partial(self) -> tuple[int, str] | None:
        with self._cond:
            return self._state.partial.pop(0) if self._state.partial else None

    def _log(self, request: ReceivedRequest, received: list[Received]) -> None:
        with self._cond:
            self._state.requests.append(request)
            self._state.records.extend(received)
            self._cond.notify_all()
