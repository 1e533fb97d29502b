"""AuditService: the user's handle on the trail: queries, flush, close, health.

A facade: the class holds the public API (its signatures and docstrings are
the API reference) and the handle's lifecycle, and hands the work to one
module per concept, so a new feature lands where it belongs, not here:

- ``_query_args``: the arguments of every query, checked once into a ``LogQuery``;
- ``_store_access``: which store a query reaches, read-your-writes, forwarding waits;
- ``_trail_reader``: entries, pages, exports, analytics, verification;
- ``_maintainer``: purge and retention, backups, key rotation;
- ``_trail_setup`` and ``_fleet``: the writer and forwarders a first handle builds;
- ``_trails``: the process-wide registry of writers, one per file.

Every service on one file in a process is a handle on one shared writer
(queue, thread, store; see ``_trails``), so a call that has returned is
visible whichever handle reads. Decorators without ``service=`` use the
process's default service, created on first use from the ``AUDIT_*``
settings, so the design note's bare ``@audit_tool`` just works.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from . import _trails
from ._chain import Chainer
from ._fieldcrypt import FieldOpener, keyring_from_settings
from ._fleet import Fleet
from ._maintainer import TrailMaintainer
from ._query_args import MAX_LIMIT, bucket_seconds, make_query, with_caller, with_value
from ._rotation import KeyUsage, RotationReport
from ._store_access import Ask, StoreAccess
from ._trail_reader import TrailReader
from ._trail_setup import build_trail
from ._writer import AuditStats
from .analytics import ErrorGroup, TimeBucket, ToolStats
from .config import AuditSettings, load_settings
from .exceptions import AuditConfigError
from .forwarding._setup import build_central_store
from .maintenance import BackupReport, PurgeReport, VerifyReport
from .models import AuditLogEntry, AuditStatus
from .redaction import Redactor
from .storage.base import LogQuery

__all__ = [
    "MAX_LIMIT",
    "AuditService",
    "get_default_service",
    "set_default_service",
]

T = TypeVar("T")


class AuditService:
    """Records tool calls (through the decorators) and answers queries about them.

    Explicit arguments win over ``AUDIT_*`` environment variables; ``settings``
    replaces both. The writer starts on first use; ``close()`` (or ``with``)
    drains it. A service left open is drained when the interpreter exits.

    ``read_only=True`` makes a reader (what ``finops-audit`` reading commands
    use): the file is opened ``mode=ro`` on the first query and never created,
    migrated, switched to WAL or written; no writer, retention, forwarding or
    signal handler is started. A file that is not a trail this version reads
    raises :class:`AuditStorageError` naming it, with its bytes unchanged.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        settings: AuditSettings | None = None,
        redactor: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        read_only: bool = False,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = load_settings(db_path=db_path, **overrides)
        elif db_path is not None or overrides:
            settings = settings.model_copy(
                update={k: v for k, v in {"db_path": db_path, **overrides}.items() if v is not None}
            )
        if read_only:
            # A reader never purges, forwards or takes over the host's signals.
            settings = settings.model_copy(update={"retention_days": None, "handle_signals": False})
        self.settings = settings
        key = settings.hmac_key.get_secret_value().encode() if settings.hmac_key else None
        self._verifier = Chainer(key)
        self.redactor = Redactor(
            enabled=settings.redact,
            extra_keys=settings.redact_keys,
            extra_patterns=settings.redact_patterns,
            hmac_key=key,  # pseudonyms use their own subkey (see Redactor)
            hmac_keys=settings.hmac_fields,
            custom=redactor,
        )
        # Encrypted fields: plaintext with the keyring, markers without (_decrypting).
        self._opener = FieldOpener(keyring_from_settings(settings))
        self._central = build_central_store(settings, self._verifier)
        # One writer per file in the process: this service is a handle on it
        # (see _trails); the first handle's settings build it.
        chainer = self._verifier if settings.hash_chain else None
        build = functools.partial(
            build_trail, settings, self.redactor, self._verifier, chainer, read_only
        )
        if read_only:
            # Its own store (mode=ro), never shared with a writer on the same file.
            writer, fleet = build()
            self._trail = _trails.Trail(
                _trails.trail_key(settings.db_path), settings, None, writer, fleet
            )
            built = False
        else:
            self._trail, built = _trails.acquire(settings, redactor, build)
        self._writer = self._trail.writer
        self._fleet: Fleet = self._trail.fleet  # type: ignore[assignment]
        # Reads and maintenance go through one way to the store (see _store_access).
        self._access = StoreAccess(settings, self._trail, self._central, self._opener, read_only)
        self._reader = TrailReader(self._access, self._verifier)
        self._maintainer = TrailMaintainer(self._access, self._verifier)
        if built and self._fleet.forwarders and self.db_path.exists():
            # A replica restarted with a backlog ships it even before its first call.
            self._fleet.start()

    @property
    def db_path(self) -> Path:
        """The SQLite file this service writes."""
        return Path(self.settings.db_path)

    @property
    def closed(self) -> bool:
        """True once this handle is closed (or its writer was)."""
        return self._access.closed

    @property
    def trail(self) -> str:
        """Where queries read: the central store (password masked) or the SQLite file."""
        return self._central.describe() if self._central is not None else str(self.db_path)

    @property
    def central(self) -> bool:
        """True when queries read a central store (``AUDIT_DB_URL``), not the local file."""
        return self._central is not None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        where = f" central={self._central.describe()!r}" if self._central is not None else ""
        return f"<AuditService db_path={str(self.db_path)!r}{where} {state}>"

    # ------------------------------------------------------------------ queries

    def get_logs(
        self,
        tool_name: str | None = None,
        status: AuditStatus | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
        offset: int = 0,
        parameter_value: str | None = None,
        user: str | None = None,
        client_name: str | None = None,
        session_id: str | None = None,
        request_id: str | None = None,
    ) -> list[AuditLogEntry]:
        """Entries matching every given filter, newest first.

        ``since`` and ``until`` are inclusive bounds on the call's start time
        (aware datetimes or ISO strings; naive ones are taken as UTC). Entries
        of calls that have already returned are always included: the call
        flushes first (read-your-writes). ``parameter_value`` finds entries
        with a parameter *value* (never a key), at any depth, that contains the
        text as a substring, ignoring the case of ASCII letters; ``%``, ``_``
        and ``\\`` are literal. Strings and 64-bit integers (by their digits)
        are searched; fractions, booleans and null are not. It also finds
        values stored only as their HMAC pseudonym (``AUDIT_HMAC_KEY``).
        ``user``, ``client_name``, ``session_id`` and ``request_id`` match the
        caller columns exactly.
        """
        query = self._query(tool_name, status, since, until, limit, offset, parameter_value)
        query = with_caller(query, user, client_name, session_id, request_id)
        return self._reader.logs(query)

    async def aget_logs(
        self,
        tool_name: str | None = None,
        status: AuditStatus | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
        offset: int = 0,
        parameter_value: str | None = None,
        user: str | None = None,
        client_name: str | None = None,
        session_id: str | None = None,
        request_id: str | None = None,
    ) -> list[AuditLogEntry]:
        """:meth:`get_logs` for async code; never blocks the event loop."""
        query = self._query(tool_name, status, since, until, limit, offset, parameter_value)
        query = with_caller(query, user, client_name, session_id, request_id)
        return await self._reader.alogs(query)

    def _query(
        self,
        tool_name: str | None,
        status: AuditStatus | str | None,
        since: datetime | str | None,
        until: datetime | str | None,
        limit: int,
        offset: int,
        parameter_value: str | None,
    ) -> LogQuery:
        """``get_logs`` filters as a store query (the dashboard's filters use it too)."""
        query = make_query(tool_name, status, since, until, limit, offset)
        return with_value(query, parameter_value, self.redactor, self.settings.hmac_key is not None)

    async def _aask(self, ask: Ask[T]) -> T:
        """Ask the store queries read without catching up (the dashboard's live tail)."""
        return await self._access.aask(ask)

    def count(
        self,
        tool_name: str | None = None,
        status: AuditStatus | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> int:
        """How many entries match the filters."""
        return self._reader.count(make_query(tool_name, status, since, until, 1, 0))

    def iter_logs(
        self,
        tool_name: str | None = None,
        status: AuditStatus | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        page_size: int = 5000,
    ) -> Iterator[AuditLogEntry]:
        """Every matching entry, oldest first, fetched in keyset pages (bounded memory)."""
        # A generator here too: arguments are checked on the first next(), as always.
        yield from self._reader.iter_logs(make_query(tool_name, status, since, until, page_size, 0))

    def export(
        self,
        stream: IO[str],
        fmt: str = "jsonl",
        tool_name: str | None = None,
        status: AuditStatus | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        progress: Callable[[int], None] | None = None,
        page_size: int = 5000,
        decrypt: bool = False,
    ) -> int:
        """Write matching entries, oldest first, to ``stream`` as JSON lines or CSV.

        Streams keyset pages of plain rows (no models), so memory stays bounded
        whatever the size of the trail. Returns how many entries were written;
        ``progress(n)`` is called after each page. Encrypted fields are written
        as stored (ciphertext envelopes) unless ``decrypt=True``, which needs
        the keyring (``AUDIT_ENCRYPTION_KEYS``/``AUDIT_ENCRYPTION_KEYS_FILE``).
        """
        if fmt not in ("jsonl", "csv"):
            raise AuditConfigError(f"format {fmt!r} is not one of: jsonl, csv")
        if decrypt and self._opener.keyring is None:
            raise AuditConfigError(
                "export --decrypt needs the keyring: set AUDIT_ENCRYPTION_KEYS or "
                "AUDIT_ENCRYPTION_KEYS_FILE (a plain export keeps the ciphertext)"
            )
        query = make_query(tool_name, status, since, until, page_size, 0)
        return self._reader.export(stream, fmt, query, progress, decrypt)

    async def aiter_logs(
        self,
        tool_name: str | None = None,
        status: AuditStatus | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        page_size: int = 5000,
    ) -> AsyncIterator[AuditLogEntry]:
        """:meth:`iter_logs` for async code."""
        query = make_query(tool_name, status, since, until, page_size, 0)
        async for entry in self._reader.aiter_logs(query):
            yield entry

    # ------------------------------------------------------------------ analytics

    def tool_stats(
        self,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[ToolStats]:
        """Per tool: calls, failures, failure rate, latency p50/p95/p99/max; busiest first."""
        return self._reader.tool_stats(make_query(tool_name, None, since, until, 1, 0))

    async def atool_stats(
        self,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[ToolStats]:
        return await self._reader.atool_stats(make_query(tool_name, None, since, until, 1, 0))

    def slowest_calls(
        self,
        limit: int = 10,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[AuditLogEntry]:
        """The slowest calls in the window, slowest first."""
        return self._reader.slowest(make_query(tool_name, None, since, until, limit, 0))

    async def aslowest_calls(
        self,
        limit: int = 10,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[AuditLogEntry]:
        return await self._reader.aslowest(make_query(tool_name, None, since, until, limit, 0))

    def error_groups(
        self,
        limit: int = 10,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[ErrorGroup]:
        """Recent failures grouped by tool and error message, most recently seen first."""
        return self._reader.error_groups(make_query(tool_name, None, since, until, limit, 0))

    async def aerror_groups(
        self,
        limit: int = 10,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[ErrorGroup]:
        query = make_query(tool_name, None, since, until, limit, 0)
        return await self._reader.aerror_groups(query)

    def calls_over_time(
        self,
        bucket: str | int | timedelta = "1h",
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[TimeBucket]:
        """Calls and failures per time bucket (``"1m"``, ``"1h"``, ``"1d"``, or seconds)."""
        query = make_query(tool_name, None, since, until, 1, 0)
        return self._reader.time_buckets(query, bucket_seconds(bucket))

    async def acalls_over_time(
        self,
        bucket: str | int | timedelta = "1h",
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[TimeBucket]:
        query = make_query(tool_name, None, since, until, 1, 0)
        return await self._reader.atime_buckets(query, bucket_seconds(bucket))

    # ------------------------------------------------------------------ maintenance

    def verify(self, anchors: str | os.PathLike[str] | None = None) -> VerifyReport:
        """Walk the hash chain; ``ok`` is false at the first modified, missing or moved row.

        ``anchors``: an anchor file (``AUDIT_ANCHOR_PATH``) to check the trail
        against as well: ``ok`` is then also false when an anchored row is gone
        or changed, when rows were deleted from the end, or when a line of the
        file is garbled or forged (``problem`` names the file and line).
        """
        return self._reader.verify(anchors)

    async def averify(self, anchors: str | os.PathLike[str] | None = None) -> VerifyReport:
        return await self._reader.averify(anchors)

    def purge(self, older_than: str | int | timedelta) -> PurgeReport:
        """Delete entries older than ``older_than`` (``"90d"``, seconds, a timedelta).

        Deletes in small transactions so running writers are not stalled, and
        leaves a signed checkpoint so the remaining trail still verifies.
        """
        return self._maintainer.purge(older_than)

    async def apurge(self, older_than: str | int | timedelta) -> PurgeReport:
        return await self._maintainer.apurge(older_than)

    def backup(self, dest: str | os.PathLike[str]) -> BackupReport:
        """An online, consistent copy at ``dest`` (which must not exist), mode 0600."""
        return self._maintainer.backup(dest)

    async def abackup(self, dest: str | os.PathLike[str]) -> BackupReport:
        return await self._maintainer.abackup(dest)

    def rotate_keys(
        self, batch_size: int = 200, progress: Callable[[int], None] | None = None
    ) -> RotationReport:
        """Re-wrap every encrypted value whose key is not the keyring's first, ``batch_size``
        rows a transaction; resumable (rerun after any interruption) and safe beside writers.

        Ciphertexts never change, so ``verify`` passes before, during and after.
        A key may leave the keyring once :meth:`key_usage` counts no row for it.
        """
        return self._maintainer.rotate_keys(batch_size, progress)

    def key_usage(self) -> KeyUsage:
        """Rows per encryption key id (``rotate-keys --status``); needs no key."""
        return self._maintainer.key_usage()

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float | None = None) -> None:
        """Return once every entry accepted so far is committed to the database.

        The writer is shared by every service on this file in the process, so
        that covers the entries handed to any of them.
        """
        self._access.check_open()
        self._writer.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> None:
        self._access.check_open()
        await self._writer.aflush(timeout)

    def forward(self, timeout: float | None = None) -> None:
        """Return once every entry accepted so far is in the central store (and OTLP).

        Flushes, then waits for the forwarders to deliver every row committed
        to the buffer. Raises :class:`AuditTimeoutError` naming the lag and the
        last error if that does not happen within ``timeout`` seconds (default
        ``close_timeout``). Without ``AUDIT_DB_URL`` or ``AUDIT_OTLP_ENDPOINT``
        it is :meth:`flush`.
        """
        self._access.forward(self.settings.close_timeout if timeout is None else timeout)

    async def aforward(self, timeout: float | None = None) -> None:
        """:meth:`forward` for async code; never blocks the event loop, and cancelling
        it stops the wait (the entries are still delivered in the background)."""
        await self._access.aforward(self.settings.close_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write everything accepted, then stop the writer. Safe to call twice.

        With forwarding, then forwards what it can within ``forward_timeout``;
        the rest stays in the buffer and is sent by the next start. While
        other services in the process use the same file, closing this one
        only flushes: the shared writer stops with the last of them.
        """
        if self._access.handle_closed:
            return
        self._access.handle_closed = True
        wait = self.settings.close_timeout if timeout is None else timeout
        try:
            _trails.close_handle(self._trail, wait)
        finally:
            self._access.stop_central()

    async def aclose(self, timeout: float | None = None) -> None:
        if self._access.handle_closed:
            return
        self._access.handle_closed = True
        wait = self.settings.close_timeout if timeout is None else timeout
        try:
            await _trails.aclose_handle(self._trail, wait)
        finally:
            await asyncio.to_thread(self._access.stop_central)

    def stats(self) -> AuditStats:
        """Counters of the writer (accepted, written, pending, dropped, last error)
        and of forwarding (lag in entries and seconds, last error, per destination)."""
        return self._fleet.with_forwarding(self._writer.stats())

    def __enter__(self) -> AuditService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> AuditService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        writer = getattr(self, "_writer", None)
        trail = getattr(self, "_trail", None)
        access = getattr(self, "_access", None)
        if trail is None or access is None or access.handle_closed or trail.refs > 1:
            return  # another handle keeps the writer: nothing waits for exit
        if writer is not None and not writer.closed and writer.stats().running:
            warnings.warn(
                f"{self!r} was garbage-collected without close(); its entries will be "
                "written at interpreter exit. Use `with AuditService(...)` or close().",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )


_default: AuditService | None = None
_default_lock = threading.Lock()


def get_default_service() -> AuditService:
    """The process's default service, created from ``AUDIT_*`` settings on first use."""
    global _default
    service = _default
    if service is None:
        with _default_lock:
            service = _default
            if service is None:
                service = _default = AuditService()
    return service


def set_default_service(service: AuditService | None) -> AuditService | None:
    """Replace the default service (``None``: create a new one on next use); returns the old one.

    The old service is not closed: that is the caller's decision.
    """
    global _default
    with _default_lock:
        previous, _default = _default, service
    return previous
