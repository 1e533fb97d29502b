"""The embedded default store: one SQLite file in WAL mode, written in batches.

Why these choices (figures from ``DESIGN.md`` and ``benchmarks/``):

* One ``executemany`` and one commit per batch: from 1,000 rows a batch this
  reaches the raw ``sqlite3`` ceiling (about 340,000 rows/s), where one commit
  per call managed 5,000 rows/s through aiosqlite.
* ``BEGIN IMMEDIATE`` plus a busy timeout: several processes can share the file
  and wait their turn for the write lock instead of failing.
* Indexes, each paid for by the writer and each serving a ``get_logs`` filter
  on a large trail: ``timestamp`` (the design note's; newest-first and time
  ranges), ``(tool_name, timestamp)`` (a rare tool's latest calls without
  scanning the table), and a *partial* index on ``timestamp`` for failures
  only, which costs the writer nothing for successful calls.
* The file is created with mode 0600 before SQLite touches it, so the ``-wal``
  and ``-shm`` companions, which copy its mode, are private too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from .._anchors import Anchor, AnchorLog
from .._chain import Chainer
from .._encoding import decode_parameters
from ..analytics import ErrorGroup, TimeBucket, ToolStats
from ..exceptions import AuditStorageError
from ..maintenance import BackupReport, PurgeReport, VerifyReport
from ..models import AuditLogEntry, AuditStatus
from . import _sqlite_analytics as analytics_sql
from . import _sqlite_batch as batch_sql
from . import _sqlite_maintenance as maintenance_sql
from . import _sqlite_meta as meta_sql
from . import _sqlite_trail as trail_sql
from ._value_match import sqlite_value_match
from .base import CALLER_COLUMNS, LogQuery, Row

__all__ = ["SCHEMA_VERSION", "SQLiteAuditStore", "format_timestamp"]

logger = logging.getLogger("finops_audit")

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    parameters TEXT NOT NULL,
    status TEXT NOT NULL,
    error_message TEXT,
    execution_time_ms REAL,
    row_hash TEXT,
    user TEXT,
    client_name TEXT,
    client_version TEXT,
    session_id TEXT,
    request_id TEXT,
    auth_client_id TEXT,
    trace_id TEXT,
    span_id TEXT,
    labels TEXT,
    event_id TEXT
);
CREATE TABLE IF NOT EXISTS audit_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    through_id INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    rows_purged INTEGER NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_forward (
    sink TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS idx_audit_timestamp ON audit_logs(timestamp);
CREATE INDEX IF NOT EXISTS idx_audit_tool_timestamp ON audit_logs(tool_name, timestamp);
CREATE INDEX IF NOT EXISTS idx_audit_failure_timestamp
    ON audit_logs(timestamp) WHERE status = 'FAILURE';
"""

_SCHEMA_STATEMENTS = [part.strip() for part in _SCHEMA.split(";") if part.strip()]

# The batch INSERTs, the chain's tail and the anchor's snapshot live with the
# batch transaction (_sqlite_batch); these names are what benchmarks use.
_EVENT_ID = batch_sql.EVENT_ID
_ROW_COLUMNS = batch_sql.ROW_COLUMNS
_INSERT_ROW = batch_sql.INSERT_ROW
_INSERT_CHAINED = batch_sql.INSERT_CHAINED
_INSERT_BARE = batch_sql.INSERT_BARE
_INSERT_BARE_CHAINED = batch_sql.INSERT_BARE_CHAINED
_NO_CALLER = batch_sql.NO_CALLER
_COLUMNS = f"id, {_ROW_COLUMNS}, event_id"


def format_timestamp(value: datetime) -> str:
    """Stored text of ``value``: fixed-width ISO-8601 in UTC, so text order is time order."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def create_private_file(path: Path) -> None:
    """Create ``path`` (and its folders) with mode 0600 unless it exists."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SQLiteAuditStore:
    """:class:`~finops_audit.storage.AuditStore` over one SQLite file.

    Reads go through aiosqlite connections; writes through one plain
    ``sqlite3`` connection used only on the thread that calls the writing
    methods (the writer's loop), one call per batch (``_sqlite_batch``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        chainer: Chainer | None = None,
        signer: Chainer | None = None,
        read_only: bool = False,
        anchors: AnchorLog | None = None,
    ) -> None:
        self.path = Path(path)
        #: Open the file with ``mode=ro``: never create, migrate, switch to WAL or write.
        self.read_only = read_only
        self._tidy = False  # a read-only open made the WAL's -wal/-shm: remove them at close
        self.chainer = chainer
        self.signer = signer or chainer or Chainer()
        #: Where the writer appends signed anchors of the trail's end (``_anchors``).
        self.anchors = anchors
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout * 1000)
        #: The writer's own connection, used only from the thread that calls the
        #: store's writing methods (the writer's loop): see ``_sqlite_batch``.
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._reader_identity: tuple[int, int] | None = None

    def describe(self) -> str:
        return str(self.path)

    async def _connect(self, *, write: bool) -> aiosqlite.Connection:
        assert not write, "the writer's connection is a plain sqlite3 one (open())"
        return await self._connect_reader()

    async def _connect_reader(self) -> aiosqlite.Connection:
        """A reading connection, after checking the file is a trail this code reads."""
        opener = trail_sql.open_trail_reader
        if self.read_only:
            opener = trail_sql.open_trail_readonly
            self._tidy = self._tidy or not trail_sql.companions_exist(self.path)
        # Opened and checked first, so aiosqlite's thread only ever gets a
        # working connection (its failed-connect path races the loop's close).
        conn = await asyncio.to_thread(
            opener, self.path, known=SCHEMA_VERSION, busy_ms=self._busy_ms
        )
        return await aiosqlite.Connection(lambda: conn, iter_chunk_size=64)

    async def open(self) -> None:
        if self.read_only:
            return  # the reader opens (and checks) on the first query
        if self._writer is not None:
            return
        try:
            create_private_file(self.path)
            # Opened here, on the writer's own thread, which alone uses it.
            conn = _open_writer_connection(self.path, self._busy_ms, self._synchronous)
        except (OSError, sqlite3.Error) as exc:
            if "not a database" in str(exc):
                raise trail_sql.read_error(self.path, exc) from exc  # says: not SQLite
            raise AuditStorageError(f"cannot open audit database {self.path}: {exc}") from exc
        try:
            await self._prepare(conn)
        except AuditStorageError:
            conn.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            conn.close()
            raise AuditStorageError(f"cannot prepare audit database {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._writer = conn
        self._identity = self._file_identity()
        _warn_if_shared(self.path)

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    async def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL mode, schema and migrations, safe when several processes start at once.

        The schema is created inside ``BEGIN IMMEDIATE`` (the write lock first,
        then the reads), because in WAL mode a transaction that reads and then
        writes after another process committed gets SQLITE_BUSY at once, with no
        busy timeout. Anything still busy is retried quietly for busy_timeout.
        """
        deadline = time.monotonic() + self._busy_ms / 1000
        delay = 0.005
        while True:
            try:
                scheme = self._prepare_once(conn)
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            # the trail is extended under the key scheme its meta records
            if self.chainer is not None:
                self.chainer = self.chainer.for_scheme(scheme)
            return

    def _prepare_once(self, conn: sqlite3.Connection) -> int:
        """One attempt of :meth:`_prepare`; returns the trail's key scheme."""
        self._check_before_writing(conn)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        current = str(mode[0]).lower() if mode else "?"
        if current != "wal":
            logger.warning("audit database %s is not in WAL mode (%s)", self.path, current)
        conn.execute("BEGIN IMMEDIATE")
        try:
            prior = meta_sql.prior_shape(conn)
            for statement in _SCHEMA_STATEMENTS:
                conn.execute(statement)
            _migrate(conn, self.signer, prior, self.path)
            scheme = meta_sql.writing_scheme(conn)
            conn.execute("COMMIT")
        except BaseException:
            batch_sql.rollback_quietly(conn)
            raise
        return scheme

    def _check_before_writing(self, conn: sqlite3.Connection) -> None:
        """Refuse, before the first write, a file this code must not write (reads only)."""
        version = conn.execute("PRAGMA user_version").fetchone()
        rows = conn.execute(trail_sql.SHAPE_SQL).fetchall()
        trail_sql.check_trail(
            self.path,
            int(version[0]),
            [(str(t), c) for t, c in rows],
            known=SCHEMA_VERSION,
            creating=True,
        )

    def _refuse_write(self) -> None:
        if self.read_only:
            raise AuditStorageError(f"audit database {self.path} is open read-only")

    async def write_batch(self, rows: Sequence[Row]) -> None:
        self._refuse_write()
        # A connection to a file that was deleted or replaced would go on
        # "succeeding" into an unlinked inode: check (one stat) and reopen.
        if self._writer is not None and self._file_identity() != self._identity:
            logger.warning("audit database %s was removed or replaced; reopening it", self.path)
            await self._drop_writer()
        if self._writer is None:
            await self.open()
        conn = self._writer
        assert conn is not None
        try:
            # the whole transaction (and an anchor, if due) in one call on this thread
            batch_sql.write_batch(conn, rows, self.chainer, self.anchors)
        except BaseException:
            # Start the retry from a fresh connection: a read-only or vanished
            # file, or a full disk, can leave this one unusable.
            await self._drop_writer(rollback=True)
            raise

    async def _drop_writer(self, *, rollback: bool = False) -> None:
        conn, self._writer = self._writer, None
        if conn is None:
            return
        if rollback:
            batch_sql.rollback_quietly(conn)
        try:
            conn.close()
        except Exception:
            logger.debug("closing a failed audit connection", exc_info=True)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if self._reader is not None and self._reader_identity != self._file_identity():
            reader, self._reader = self._reader, None  # the file was removed or replaced
            await reader.close()
        try:
            if self._reader is None:
                self._reader = await self._connect(write=False)
                self._reader_identity = self._file_identity()
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise AuditStorageError(f"cannot read audit database {self.path}: {exc}") from exc

    async def query(self, query: LogQuery) -> list[AuditLogEntry]:
        return [row_to_entry(row) for row in await self._fetch(*build_select(query))]

    async def count(self, query: LogQuery) -> int:
        where, params = build_where(query)
        rows = await self._fetch(f"SELECT COUNT(*) FROM audit_logs{where}", params)
        return int(rows[0][0])

    async def page_after(self, query: LogQuery, after_id: int) -> list[AuditLogEntry]:
        where, params = build_where(query)
        where = f"{where} AND id > ?" if where else " WHERE id > ?"
        sql = f"SELECT {_COLUMNS} FROM audit_logs{where} ORDER BY id LIMIT ?"
        rows = await self._fetch(sql, [*params, after_id, query.limit])
        return [row_to_entry(row) for row in rows]

    async def rows_after(self, query: LogQuery, after_id: int) -> list[dict[str, Any]]:
        return [row_to_dict(row) for row in await self.tuples_after(query, after_id)]

    async def tuples_after(self, query: LogQuery, after_id: int) -> list[tuple[Any, ...]]:
        """:meth:`rows_after` as the stored tuples (``row_to_dict`` order), nothing decoded:
        the dashboard's live tail writes each one's JSON once from its stored text."""
        where, params = build_where(query)
        where = f"{where} AND id > ?" if where else " WHERE id > ?"
        sql = f"SELECT {_COLUMNS} FROM audit_logs{where} ORDER BY id LIMIT ?"
        return await self._fetch(sql, [*params, after_id, query.limit])

    async def tool_stats(self, query: LogQuery) -> list[ToolStats]:
        rows = await self._fetch(*analytics_sql.tool_stats_sql(query))
        return [ToolStats.from_row(row) for row in rows]

    async def slowest(self, query: LogQuery) -> list[AuditLogEntry]:
        rows = await self._fetch(*analytics_sql.slowest_sql(query, _COLUMNS))
        return [row_to_entry(row) for row in rows]

    async def error_groups(self, query: LogQuery) -> list[ErrorGroup]:
        rows = await self._fetch(*analytics_sql.error_groups_sql(query))
        return [
            ErrorGroup(
                tool_name=tool,
                error_message=error,
                count=count,
                first_seen=_parse_ts(first),
                last_seen=_parse_ts(last),
            )
            for tool, error, count, first, last in rows
        ]

    async def time_buckets(self, query: LogQuery, seconds: int) -> list[TimeBucket]:
        rows = await self._fetch(*analytics_sql.buckets_sql(query, seconds))
        return [
            TimeBucket(
                start=datetime.fromtimestamp(bucket, timezone.utc),
                calls=calls,
                failures=failures or 0,
            )
            for bucket, calls, failures in rows
            if bucket is not None
        ]

    async def verify(
        self, chainer: Chainer, anchors: Sequence[Anchor] = (), anchor_source: str = ""
    ) -> VerifyReport:
        await self._fetch("SELECT 1", ())  # (re)open the reader on the current file
        assert self._reader is not None
        return await maintenance_sql.verify(self._reader, chainer, anchors, anchor_source)

    async def purge(self, cutoff: datetime, chainer: Chainer) -> PurgeReport:
        self._refuse_write()
        return await maintenance_sql.purge(
            self.path, self._busy_ms, chainer, format_timestamp(cutoff)
        )

    async def backup(self, dest: Path) -> BackupReport:
        await self._fetch("SELECT 1", ())  # the source is a trail this code reads, or an error
        return await asyncio.to_thread(
            maintenance_sql.backup, self.path, dest, SCHEMA_VERSION, self._busy_ms
        )

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        if self.anchors is not None and self.anchors.pending and self._writer is not None:
            batch_sql.append_anchor(self._writer, self.anchors)  # the trail's end at close
        await self._drop_writer()
        if self._tidy:
            self._tidy = False
            await asyncio.to_thread(trail_sql.tidy_companions, self.path)


_warned_paths: set[str] = set()


def _open_writer_connection(path: Path, busy_ms: int, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def _warn_if_shared(path: Path) -> None:
    """Log once per file if the trail is readable or writable by others."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return
    if mode & 0o077 and str(path) not in _warned_paths:
        _warned_paths.add(str(path))
        logger.warning(
            "audit database %s has mode %s: others can read it; run `chmod 600 %s`",
            path,
            oct(mode),
            path,
        )


def _migrate(
    conn: sqlite3.Connection, signer: Chainer, prior: meta_sql.PriorShape, path: Path
) -> None:
    """Upgrade older trails in place (the design note's schema is version 0).

    Rows written before the hash chain existed keep a NULL ``row_hash``; the
    last such id is recorded once, signed, when a trail without ``audit_meta``
    is first upgraded (``_sqlite_meta``), so ``verify`` accepts NULL hashes up
    to it and nowhere else (nulling hashes cannot hide an edit), and opening
    a chained trail never re-creates nor re-signs it.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_logs)")}
    for column in ("row_hash", *CALLER_COLUMNS, "event_id"):
        if column not in columns:
            conn.execute(f"ALTER TABLE audit_logs ADD COLUMN {column} TEXT")
    if "event_id" not in columns:
        # rows of older versions get their fleet-wide identity once, here
        conn.execute(f"UPDATE audit_logs SET event_id = {_EVENT_ID} WHERE event_id IS NULL")
    meta_sql.write_first_meta(
        conn,
        signer,
        meta_existed=prior.meta_existed,
        had_row_hash=prior.had_row_hash,
        path=path,
    )
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def build_select(query: LogQuery) -> tuple[str, list[Any]]:
    """SQL and parameters for ``query``, newest first, with limit and offset."""
    where, params = build_where(query)
    sql = (
        f"SELECT {_COLUMNS} FROM audit_logs{where} "
        "ORDER BY timestamp DESC, id DESC LIMIT ? OFFSET ?"
    )
    return sql, [*params, query.limit, query.offset]


def build_where(query: LogQuery) -> tuple[str, list[Any]]:
    """WHERE clause for ``query``'s filters; every value is bound, never interpolated.

    The status is written as a literal (from the enum, not the caller) so SQLite
    can use the partial index on failures.
    """
    where: list[str] = []
    params: list[Any] = []
    if query.tool_name is not None:
        where.append("tool_name = ?")
        params.append(query.tool_name)
    if query.status is not None:
        where.append(f"status = '{AuditStatus(query.status).value}'")
    if query.since is not None:
        where.append("timestamp >= ?")
        params.append(format_timestamp(query.since))
    if query.until is not None:
        where.append("timestamp <= ?")
        params.append(format_timestamp(query.until))
    for column, value in query.caller:
        assert column in CALLER_COLUMNS
        where.append(f"{column} = ?")
        params.append(value)
    if query.parameter_value is not None:
        # values only, never keys, at any depth (see _value_match)
        needles = [query.parameter_value]
        if query.pseudonym is not None:
            needles.append(query.pseudonym)
        matches = [sqlite_value_match(n) for n in needles]
        where.append("(" + " OR ".join(sql for sql, _ in matches) + ")")
        params.extend(p for _, ps in matches for p in ps)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _parse_ts(text: str | datetime) -> datetime:
    if isinstance(text, datetime):  # a central store's timestamptz
        return text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def row_to_entry(row: Sequence[Any], replica_id: str | None = None) -> AuditLogEntry:
    """Build the public model from a stored row, tolerating rows older code wrote.

    The central store reads through here too (``replica_id`` set, timestamps
    already datetimes), so both stores make the same entry from the same row.
    """
    ident, ts, tool, params, status, error, elapsed = row[:7]
    user, name, version, session, request, auth, trace, span, labels = row[7:16]
    return AuditLogEntry(
        id=ident,
        timestamp=_parse_ts(ts),
        tool_name=tool,
        parameters=decode_parameters(params),
        status=AuditStatus(status),
        error_message=error,
        execution_time_ms=elapsed,
        user=user,
        client_name=name,
        client_version=version,
        session_id=session,
        request_id=request,
        auth_client_id=auth,
        trace_id=trace,
        span_id=span,
        labels=_labels(labels),
        event_id=row[16] if len(row) > 16 else None,
        replica_id=replica_id,
    )


_FIELDS = (
    "id",
    "timestamp",
    "tool_name",
    "parameters",
    "status",
    "error_message",
    "execution_time_ms",
    *CALLER_COLUMNS,
    "event_id",
)


def row_to_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A stored row as the JSON an exported entry is (timestamps stay ISO text, in UTC)."""
    out = dict(zip(_FIELDS, row, strict=False))
    ts = out["timestamp"]
    if isinstance(ts, str) and ts.endswith("+00:00"):
        out["timestamp"] = ts[:-6] + "Z"
    out["parameters"] = decode_parameters(out["parameters"])
    out["labels"] = _labels(out["labels"])
    return out


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"$unparsed": text}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
