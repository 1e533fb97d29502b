"""AuditService: the user's handle on the trail: queries, flush, close, health.

Every service on one file in a process is a handle on one shared writer
(queue, thread, store; see ``_trails``), so a call that has returned is
visible whichever handle reads. Decorators without ``service=`` use the
process's default service, created on first use from the ``AUDIT_*``
settings, so the design note's bare ``@audit_tool`` just works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import functools
import logging
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar, cast

import orjson

from . import _trails
from ._anchors import Anchor, AnchorFileError, AnchorLog, read_anchors
from ._chain import Chainer
from ._decrypting import DecryptingReader, open_row, verify_sealed
from ._durations import parse_duration
from ._fieldcrypt import FieldOpener, keyring_from_settings
from ._rotation import KeyUsage, RotationReport, key_usage, rotate_keys
from ._writer import AuditStats, AuditWriter, WriterHooks
from .analytics import ErrorGroup, TimeBucket, ToolStats
from .config import AuditSettings, load_settings
from .exceptions import AuditClosedError, AuditConfigError, AuditTimeoutError
from .forwarding._forwarder import Forwarder
from .forwarding._setup import build_central_store, build_forwarders
from .maintenance import BackupReport, PurgeReport, VerifyReport
from .models import AuditLogEntry, AuditStatus
from .redaction import Redactor
from .storage._loop import LoopThread
from .storage.base import AuditReader, AuditStore, LogQuery
from .storage.sqlite import SQLiteAuditStore

__all__ = [
    "MAX_LIMIT",
    "AuditService",
    "get_default_service",
    "set_default_service",
]

T = TypeVar("T")

logger = logging.getLogger("finops_audit")

#: Largest ``limit`` one ``get_logs`` call may ask for; page with ``offset`` beyond it.
MAX_LIMIT = 100_000


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
        self._read_only = read_only
        if read_only:
            # A reader never purges, forwards or takes over the host's signals.
            settings = settings.model_copy(update={"retention_days": None, "handle_signals": False})
        self.settings = settings
        key = settings.hmac_key.get_secret_value().encode() if settings.hmac_key else None
        self._verifier = Chainer(key)
        self._chainer = self._verifier if settings.hash_chain else None
        self.redactor = Redactor(
            enabled=settings.redact,
            extra_keys=settings.redact_keys,
            extra_patterns=settings.redact_patterns,
            hmac_key=key,  # pseudonyms use their own subkey (see Redactor)
            hmac_keys=settings.hmac_fields,
            custom=redactor,
        )
        self._closed = False
        # Encrypted fields: plaintext with the keyring, markers without (_decrypting).
        self._opener = FieldOpener(keyring_from_settings(settings))
        self._central = build_central_store(settings, self._verifier)
        # One writer per file in the process: this service is a handle on it
        # (see _trails); the first handle's settings build it.
        if read_only:
            # Its own store (mode=ro), never shared with a writer on the same file.
            writer, fleet = self._build_writer()
            self._trail = _trails.Trail(
                _trails.trail_key(settings.db_path), settings, None, writer, fleet
            )
            built = False
        else:
            self._trail, built = _trails.acquire(settings, redactor, self._build_writer)
        self._writer = self._trail.writer
        self._fleet: _Fleet = self._trail.fleet  # type: ignore[assignment]
        self._central_loop = LoopThread("finops-audit-central") if self._central else None
        if built and self._fleet.forwarders and self.db_path.exists():
            # A replica restarted with a backlog ships it even before its first call.
            self._fleet.start()

    def _build_writer(self) -> tuple[AuditWriter, _Fleet]:
        # The file is fixed now: a later chdir must not move the trail.
        settings = self.settings.model_copy(
            update={"db_path": Path(_trails.trail_key(self.settings.db_path))}
        )
        # The writer outlives an unclosed service (it is drained at exit), so
        # nothing it holds may refer back to the service: plain partials.
        retention = (
            functools.partial(_apply_retention, settings.retention_days, self._verifier)
            if settings.retention_days is not None
            else None
        )
        store_factory = functools.partial(
            SQLiteAuditStore,
            settings.db_path,
            synchronous=settings.synchronous,
            busy_timeout=settings.busy_timeout,
            chainer=None if self._read_only else self._chainer,
            signer=self._verifier,
            read_only=self._read_only,
            anchors=(
                AnchorLog(
                    settings.anchor_path.absolute(),  # a later chdir must not move it
                    self._verifier,
                    str(settings.db_path),
                    settings.anchor_interval,
                )
                if settings.anchor_path is not None and not self._read_only
                else None
            ),
        )
        # With a central store, retention is applied there (and to the buffer only
        # below the forwarding cursor), never to rows still waiting to be sent.
        forwarders = [] if self._read_only else build_forwarders(settings, self._verifier)
        fleet = _Fleet(forwarders, settings.forward_timeout)
        if fleet.forwarders:
            retention = None  # the forwarders apply it, never above their cursors
        hooks = fleet.hooks() if fleet.forwarders else None
        return AuditWriter(store_factory, settings, self.redactor, retention, hooks), fleet

    @property
    def db_path(self) -> Path:
        """The SQLite file this service writes."""
        return Path(self.settings.db_path)

    @property
    def closed(self) -> bool:
        """True once this handle is closed (or its writer was)."""
        return self._closed or self._writer.closed

    def _check_open(self) -> None:
        if self.closed:
            raise AuditClosedError("this audit service is closed; create a new AuditService")

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

    def _catch_up(self) -> None:
        """Read-your-writes: this service's accepted entries are in the store read.

        Only the central store's forwarder is waited for: an OTLP collector
        being down must not stop queries. Reading a central store, the other
        trails of this process that forward to it are caught up too. A
        read-only service flushes the writer a service of this process keeps
        open on its file.
        """
        self._check_open()
        self._writer.flush(timeout=self.settings.close_timeout)
        if self._read_only:
            _flush_writing(self._trail.key, self.settings.close_timeout)
        if self._central is None:
            return
        if self._writer.stats().accepted:
            self._forward(self.settings.close_timeout, central_only=True)
        for peer in _trails.trails_to(self.settings):
            if peer is not self._trail and not peer.writer.closed:
                _catch_up_peer(peer, self.settings.close_timeout)

    async def _acatch_up(self) -> None:
        self._check_open()
        await self._writer.aflush(timeout=self.settings.close_timeout)
        if self._read_only:
            await asyncio.to_thread(_flush_writing, self._trail.key, self.settings.close_timeout)
        if self._central is None:
            return
        if self._writer.stats().accepted:
            await self._aforward(self.settings.close_timeout, central_only=True)
        for peer in _trails.trails_to(self.settings):
            if peer is not self._trail and not peer.writer.closed:
                await asyncio.to_thread(_catch_up_peer, peer, self.settings.close_timeout)

    def _ask(self, ask: Callable[[AuditReader], Coroutine[Any, Any, T]]) -> T:
        """Run ``ask`` on the store queries read: the central one if configured."""
        ask = self._opening(ask)
        if self._central is not None and self._central_loop is not None:
            if self.closed:
                raise AuditClosedError("this audit service is closed; create a new AuditService")
            try:
                return self._central_loop.run(ask(self._central))
            except concurrent.futures.CancelledError:
                raise AuditClosedError("the audit service was closed during the query") from None
        self._check_open()
        return self._writer.run(ask)

    def _opening(
        self, ask: Callable[[AuditReader], Coroutine[Any, Any, T]]
    ) -> Callable[[AuditReader], Coroutine[Any, Any, T]]:
        """``ask`` over a view of the store whose entries have encrypted fields opened."""
        opener = self._opener

        def opened(store: AuditReader) -> Coroutine[Any, Any, T]:
            return ask(cast(AuditReader, DecryptingReader(store, opener)))

        return opened

    async def _aask(self, ask: Callable[[AuditReader], Coroutine[Any, Any, T]]) -> T:
        ask = self._opening(ask)
        if self._central is not None and self._central_loop is not None:
            if self.closed:
                raise AuditClosedError("this audit service is closed; create a new AuditService")
            try:
                return await self._central_loop.arun(ask(self._central))
            except asyncio.CancelledError:
                if self.closed:
                    raise AuditClosedError(
                        "the audit service was closed during the query"
                    ) from None
                raise
        self._check_open()
        return await self._writer.arun(ask)

    def _read(self, ask: Callable[[AuditReader], Coroutine[Any, Any, T]]) -> T:
        """Run ``ask`` after a flush: a query sees every call that returned."""
        self._catch_up()
        return self._ask(ask)

    async def _aread(self, ask: Callable[[AuditReader], Coroutine[Any, Any, T]]) -> T:
        await self._acatch_up()
        return await self._aask(ask)

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
        query = _with_caller(query, user, client_name, session_id, request_id)
        return self._read(lambda store: store.query(query))

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
        query = _with_caller(query, user, client_name, session_id, request_id)
        return await self._aread(lambda store: store.query(query))

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
        query = make_query(tool_name, status, since, until, limit, offset)
        if parameter_value is None:
            return query
        if not isinstance(parameter_value, str) or not parameter_value:
            raise AuditConfigError(
                f"parameter_value must be a non-empty string, not {parameter_value!r}"
            )
        pseudonym = (
            self.redactor.pseudonym(parameter_value) if self.settings.hmac_key is not None else None
        )
        return replace(query, parameter_value=parameter_value, pseudonym=pseudonym)

    def count(
        self,
        tool_name: str | None = None,
        status: AuditStatus | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> int:
        """How many entries match the filters."""
        query = make_query(tool_name, status, since, until, 1, 0)
        return self._read(lambda store: store.count(query))

    def iter_logs(
        self,
        tool_name: str | None = None,
        status: AuditStatus | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        page_size: int = 5000,
    ) -> Iterator[AuditLogEntry]:
        """Every matching entry, oldest first, fetched in keyset pages (bounded memory)."""
        query = make_query(tool_name, status, since, until, page_size, 0)
        self._catch_up()
        after = 0
        while True:
            page = self._ask(lambda store, a=after: store.page_after(query, a))  # type: ignore[misc]
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].id

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
        self._catch_up()
        writer = None
        if fmt == "csv":
            writer = csv.DictWriter(
                stream, fieldnames=list(AuditLogEntry.model_fields), lineterminator="\n"
            )
            writer.writeheader()
        after = written = 0
        while True:
            page = self._ask(lambda store, a=after: store.rows_after(query, a))  # type: ignore[misc]
            if decrypt:
                page = [open_row(self._opener, row) for row in page]
            if writer is not None:
                for row in page:
                    row["parameters"] = orjson.dumps(row["parameters"]).decode()
                    row["labels"] = orjson.dumps(row["labels"]).decode() if row["labels"] else ""
                writer.writerows(page)
            else:
                stream.write("".join(orjson.dumps(row).decode() + "\n" for row in page))
            written += len(page)
            if progress is not None:
                progress(len(page))
            if len(page) < page_size:
                return written
            after = page[-1]["id"]

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
        await self._acatch_up()
        after = 0
        while True:
            page = await self._aask(lambda store, a=after: store.page_after(query, a))  # type: ignore[misc]
            for entry in page:
                yield entry
            if len(page) < page_size:
                return
            after = page[-1].id

    # ------------------------------------------------------------------ analytics

    def tool_stats(
        self,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[ToolStats]:
        """Per tool: calls, failures, failure rate, latency p50/p95/p99/max; busiest first."""
        query = make_query(tool_name, None, since, until, 1, 0)
        return self._read(lambda store: store.tool_stats(query))

    async def atool_stats(
        self,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[ToolStats]:
        query = make_query(tool_name, None, since, until, 1, 0)
        return await self._aread(lambda store: store.tool_stats(query))

    def slowest_calls(
        self,
        limit: int = 10,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[AuditLogEntry]:
        """The slowest calls in the window, slowest first."""
        query = make_query(tool_name, None, since, until, limit, 0)
        return self._read(lambda store: store.slowest(query))

    async def aslowest_calls(
        self,
        limit: int = 10,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[AuditLogEntry]:
        query = make_query(tool_name, None, since, until, limit, 0)
        return await self._aread(lambda store: store.slowest(query))

    def error_groups(
        self,
        limit: int = 10,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[ErrorGroup]:
        """Recent failures grouped by tool and error message, most recently seen first."""
        query = make_query(tool_name, None, since, until, limit, 0)
        return self._read(lambda store: store.error_groups(query))

    async def aerror_groups(
        self,
        limit: int = 10,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[ErrorGroup]:
        query = make_query(tool_name, None, since, until, limit, 0)
        return await self._aread(lambda store: store.error_groups(query))

    def calls_over_time(
        self,
        bucket: str | int | timedelta = "1h",
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[TimeBucket]:
        """Calls and failures per time bucket (``"1m"``, ``"1h"``, ``"1d"``, or seconds)."""
        query = make_query(tool_name, None, since, until, 1, 0)
        seconds = _bucket_seconds(bucket)
        return self._read(lambda store: store.time_buckets(query, seconds))

    async def acalls_over_time(
        self,
        bucket: str | int | timedelta = "1h",
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tool_name: str | None = None,
    ) -> list[TimeBucket]:
        query = make_query(tool_name, None, since, until, 1, 0)
        seconds = _bucket_seconds(bucket)
        return await self._aread(lambda store: store.time_buckets(query, seconds))

    # ------------------------------------------------------------------ maintenance

    def verify(self, anchors: str | os.PathLike[str] | None = None) -> VerifyReport:
        """Walk the hash chain; ``ok`` is false at the first modified, missing or moved row.

        ``anchors``: an anchor file (``AUDIT_ANCHOR_PATH``) to check the trail
        against as well: ``ok`` is then also false when an anchored row is gone
        or changed, when rows were deleted from the end, or when a line of the
        file is garbled or forged (``problem`` names the file and line).
        """
        found = self._anchors(anchors)
        if isinstance(found, VerifyReport):
            return found
        return self._read(lambda store: verify_sealed(store, self._verifier, found, self._opener))

    async def averify(self, anchors: str | os.PathLike[str] | None = None) -> VerifyReport:
        found = await asyncio.to_thread(self._anchors, anchors)
        if isinstance(found, VerifyReport):
            return found
        return await self._aread(
            lambda store: verify_sealed(store, self._verifier, found, self._opener)
        )

    def _anchors(
        self, path: str | os.PathLike[str] | None
    ) -> tuple[list[Anchor], str] | VerifyReport:
        if path is None:
            return [], ""
        if self._central is not None:
            raise AuditConfigError(
                "an anchor file checks one SQLite trail: verify the replica's file "
                "(unset AUDIT_DB_URL); the central trail is checked against its own anchors"
            )
        try:
            return read_anchors(Path(path), self._verifier), str(path)
        except AnchorFileError as exc:
            return VerifyReport(
                ok=False, rows_checked=0, problem=str(exc), keyed=self._verifier.keyed
            )

    def purge(self, older_than: str | int | timedelta) -> PurgeReport:
        """Delete entries older than ``older_than`` (``"90d"``, seconds, a timedelta).

        Deletes in small transactions so running writers are not stalled, and
        leaves a signed checkpoint so the remaining trail still verifies.
        """
        cutoff = datetime.now(timezone.utc) - parse_duration(older_than, name="older_than")
        return self._ask(lambda store: store.purge(cutoff, self._verifier))

    async def apurge(self, older_than: str | int | timedelta) -> PurgeReport:
        cutoff = datetime.now(timezone.utc) - parse_duration(older_than, name="older_than")
        return await self._aask(lambda store: store.purge(cutoff, self._verifier))

    def backup(self, dest: str | os.PathLike[str]) -> BackupReport:
        """An online, consistent copy at ``dest`` (which must not exist), mode 0600."""
        self._catch_up()
        target = Path(dest)
        return self._ask(lambda store: store.backup(target))

    async def abackup(self, dest: str | os.PathLike[str]) -> BackupReport:
        await self._acatch_up()
        target = Path(dest)
        return await self._aask(lambda store: store.backup(target))

    # ------------------------------------------------------------------ lifecycle

    def rotate_keys(
        self, batch_size: int = 200, progress: Callable[[int], None] | None = None
    ) -> RotationReport:
        """Re-wrap every encrypted value whose key is not the keyring's first, ``batch_size``
        rows a transaction; resumable (rerun after any interruption) and safe beside writers.

        Ciphertexts never change, so ``verify`` passes before, during and after.
        A key may leave the keyring once :meth:`key_usage` counts no row for it.
        """
        if self._opener.keyring is None:
            raise AuditConfigError(
                "rotate-keys needs the keyring: set AUDIT_ENCRYPTION_KEYS (or _FILE) with the "
                "new key first, followed by the old ones"
            )
        self._check_local("rotate-keys")
        if not 1 <= batch_size <= 100_000:
            raise AuditConfigError(f"batch_size must be 1-100000, not {batch_size!r}")
        self._catch_up()
        return rotate_keys(
            self.db_path,
            self._opener,
            batch_size=batch_size,
            busy_timeout=self.settings.busy_timeout,
            progress=progress,
        )

    def key_usage(self) -> KeyUsage:
        """Rows per encryption key id (``rotate-keys --status``); needs no key."""
        self._check_local("rotate-keys --status")
        self._catch_up()
        return key_usage(self.db_path, self.settings.busy_timeout)

    def _check_local(self, what: str) -> None:
        self._check_open()
        if self._central is not None:
            raise AuditConfigError(
                f"{what} works on a local trail: run it where AUDIT_DB_PATH is, without "
                "AUDIT_DB_URL (central rows keep the wraps they were forwarded with)"
            )

    def flush(self, timeout: float | None = None) -> None:
        """Return once every entry accepted so far is committed to the database.

        The writer is shared by every service on this file in the process, so
        that covers the entries handed to any of them.
        """
        self._check_open()
        self._writer.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> None:
        self._check_open()
        await self._writer.aflush(timeout)

    def forward(self, timeout: float | None = None) -> None:
        """Return once every entry accepted so far is in the central store (and OTLP).

        Flushes, then waits for the forwarders to deliver every row committed
        to the buffer. Raises :class:`AuditTimeoutError` naming the lag and the
        last error if that does not happen within ``timeout`` seconds (default
        ``close_timeout``). Without ``AUDIT_DB_URL`` or ``AUDIT_OTLP_ENDPOINT``
        it is :meth:`flush`.
        """
        self._forward(self.settings.close_timeout if timeout is None else timeout)

    async def aforward(self, timeout: float | None = None) -> None:
        """:meth:`forward` for async code; never blocks the event loop, and cancelling
        it stops the wait (the entries are still delivered in the background)."""
        await self._aforward(self.settings.close_timeout if timeout is None else timeout)

    def _forwarders(self, central_only: bool) -> list[Forwarder]:
        if self.closed:
            raise AuditClosedError("this audit service is closed; create a new AuditService")
        self._writer.start()
        return [f for f in self._fleet.forwarders if not central_only or f.sink_name == "postgres"]

    def _forward(self, wait: float, central_only: bool = False) -> None:
        deadline = time.monotonic() + wait
        self._writer.flush(timeout=wait)
        if not self._fleet.forwarders:
            return
        for forwarder in self._forwarders(central_only):
            forwarder.wait_forwarded(max(deadline - time.monotonic(), 0.0))

    async def _aforward(self, wait: float, central_only: bool = False) -> None:
        deadline = time.monotonic() + wait
        await self._writer.aflush(timeout=wait)
        if not self._fleet.forwarders:
            return
        forwarders = await asyncio.to_thread(self._forwarders, central_only)
        for forwarder in forwarders:
            goal = await asyncio.to_thread(forwarder.goal)
            # Short slices in a thread: a cancelled aforward leaves no long wait behind.
            while True:
                left = deadline - time.monotonic()
                try:
                    await asyncio.to_thread(forwarder.wait_forwarded, min(max(left, 0), 0.2), goal)
                    break
                except AuditTimeoutError:
                    if time.monotonic() >= deadline:
                        behind = await asyncio.to_thread(forwarder.behind, goal)
                        raise forwarder.late(wait, behind) from None

    def close(self, timeout: float | None = None) -> None:
        """Write everything accepted, then stop the writer. Safe to call twice.

        With forwarding, then forwards what it can within ``forward_timeout``;
        the rest stays in the buffer and is sent by the next start. While
        other services in the process use the same file, closing this one
        only flushes: the shared writer stops with the last of them.
        """
        if self._closed:
            return
        self._closed = True
        wait = self.settings.close_timeout if timeout is None else timeout
        try:
            if not _trails.release(self._trail):
                self._flush_shared(wait)
                return
            try:
                self._writer.close(wait)
            finally:
                self._fleet.close()
        finally:
            self._stop_central()

    async def aclose(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        wait = self.settings.close_timeout if timeout is None else timeout
        try:
            if not _trails.release(self._trail):
                await asyncio.to_thread(self._flush_shared, wait)
                return
            try:
                await self._writer.aclose(wait, run_hooks=False)
            finally:
                await asyncio.to_thread(self._fleet.close)
        finally:
            await asyncio.to_thread(self._stop_central)

    def _flush_shared(self, wait: float) -> None:
        """Closing one of several handles: flush, never stop the others' writer."""
        if self._writer.closed:
            return
        try:
            self._writer.flush(wait)
        except AuditTimeoutError as exc:
            logger.warning(
                "finops_audit: %s; the writer still open for the other services on %s "
                "keeps them and retries",
                exc,
                self._trail.key,
            )

    def _stop_central(self) -> None:
        if self._central_loop is not None and self._central is not None:
            self._central_loop.stop(self._central.close())

    def stats(self) -> AuditStats:
        """Counters of the writer (accepted, written, pending, dropped, last error)
        and of forwarding (lag in entries and seconds, last error, per destination)."""
        stats = self._writer.stats()
        if not self._fleet.forwarders:
            return stats
        per_sink = {f.sink_name: f.stats() for f in self._fleet.forwarders}
        errors = [f"{name}: {s.last_error}" for name, s in per_sink.items() if s.last_error]
        return replace(
            stats,
            forward_lag_entries=max(s.lag_entries for s in per_sink.values()),
            forward_lag_seconds=max(s.lag_seconds for s in per_sink.values()),
            forward_last_error="; ".join(errors) or None,
            forwarding=per_sink,
        )

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
        if trail is None or self._closed or trail.refs > 1:
            return  # another handle keeps the writer: nothing waits for exit
        if writer is not None and not writer.closed and writer.stats().running:
            warnings.warn(
                f"{self!r} was garbage-collected without close(); its entries will be "
                "written at interpreter exit. Use `with AuditService(...)` or close().",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )


class _Fleet:
    """The forwarders of one service; the writer's hooks refer to this, not the service."""

    def __init__(self, forwarders: list[Forwarder], timeout: float) -> None:
        self.forwarders = forwarders
        self._timeout = timeout

    def hooks(self) -> WriterHooks:
        return WriterHooks(started=self.start, committed=self.notify, closed=self.close)

    def start(self) -> None:
        for forwarder in self.forwarders:
            forwarder.start()

    def notify(self) -> None:
        for forwarder in self.forwarders:
            forwarder.notify()

    def close(self) -> None:
        deadline = time.monotonic() + self._timeout
        for forwarder in self.forwarders:
            forwarder.close(max(deadline - time.monotonic(), 0.0))


def _flush_writing(key: str, wait: float) -> None:
    """A read-only service reads what a writer of this process accepted on its file."""
    trail = _trails.writing(key)
    if trail is None:
        return
    try:
        trail.writer.flush(timeout=wait)
    except AuditClosedError:
        pass  # closed meanwhile: it drained


def _catch_up_peer(peer: _trails.Trail, wait: float) -> None:
    """Another trail of this process forwarding to the same central store."""
    deadline = time.monotonic() + wait
    try:
        peer.writer.flush(timeout=wait)
    except AuditClosedError:
        return
    fleet: _Fleet = peer.fleet  # type: ignore[assignment]
    if not peer.writer.stats().accepted:
        return
    for forwarder in fleet.forwarders:
        if forwarder.sink_name == "postgres":
            forwarder.wait_forwarded(max(deadline - time.monotonic(), 0.0))


def _with_caller(
    query: LogQuery,
    user: str | None,
    client_name: str | None,
    session_id: str | None,
    request_id: str | int | None,
) -> LogQuery:
    pairs = []
    for name, value in (
        ("user", user),
        ("client_name", client_name),
        ("session_id", session_id),
        ("request_id", request_id),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise AuditConfigError(f"{name} must be a string, not {value!r}")
        pairs.append((name, str(value)))
    return replace(query, caller=tuple(pairs)) if pairs else query


async def _apply_retention(days: float, chainer: Chainer, store: AuditStore) -> PurgeReport:
    return await store.purge(datetime.now(timezone.utc) - timedelta(days=days), chainer)


def _bucket_seconds(bucket: str | int | timedelta) -> int:
    seconds = int(parse_duration(bucket, name="bucket").total_seconds())
    if seconds < 1:
        raise AuditConfigError(f"bucket={bucket!r} must be at least one second")
    return seconds


def _as_datetime(name: str, value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise AuditConfigError(
                f"{name}={value!r} is not an ISO-8601 date or time (e.g. 2026-11-28T04:00:00Z)"
            ) from None
    if not isinstance(value, datetime):
        raise AuditConfigError(f"{name} must be a datetime or an ISO-8601 string, not {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def make_query(
    tool_name: str | None,
    status: AuditStatus | str | None,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int,
    offset: int,
) -> LogQuery:
    """Validate ``get_logs`` arguments; a bad one raises :class:`AuditConfigError`."""
    if tool_name is not None and not isinstance(tool_name, str):
        raise AuditConfigError(f"tool_name must be a string, not {tool_name!r}")
    parsed_status: AuditStatus | None = None
    if status is not None:
        try:
            parsed_status = AuditStatus(status.upper() if isinstance(status, str) else status)
        except ValueError:
            accepted = ", ".join(s.value for s in AuditStatus)
            raise AuditConfigError(
                f"status={status!r} is invalid; use one of: {accepted}"
            ) from None
    for name, number, low in (("limit", limit, 1), ("offset", offset, 0)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise AuditConfigError(f"{name} must be an integer, not {number!r}")
        if number < low:
            raise AuditConfigError(f"{name}={number} must be at least {low}")
    if limit > MAX_LIMIT:
        raise AuditConfigError(f"limit={limit} is more than {MAX_LIMIT}; page with offset")
    start = _as_datetime("since", since)
    end = _as_datetime("until", until)
    if start is not None and end is not None and start > end:
        raise AuditConfigError(f"since ({start.isoformat()}) is after until ({end.isoformat()})")
    return LogQuery(tool_name, parsed_status, start, end, limit, offset)


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
