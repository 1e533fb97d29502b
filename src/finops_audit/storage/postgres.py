"""The central store: a fleet's trail in PostgreSQL, read with psycopg 3 (async).

Replicas never write here directly: each one's forwarder copies its buffer
into ``audit_logs`` (see :mod:`finops_audit.forwarding`), and this class
answers every query, analytic and maintenance command over the whole fleet,
with the same semantics as :class:`~finops_audit.storage.SQLiteAuditStore`.

* One ``AsyncConnection`` in autocommit mode, made on first use and made
  again after it broke (a read that finds it broken is retried once, on the
  new one: reads are idempotent). Verify, purge and backup use a connection
  of their own, so their transactions never interleave with queries.
* Every session sets ``plan_cache_mode = force_custom_plan``: psycopg
  prepares a statement after five runs, and PostgreSQL's generic plan for a
  prepared ``tool_name = $1`` ignores how rare that tool is (measured: a rare
  tool's page went from 0.45 ms to 66-94 ms). ``TimeZone = UTC`` makes every
  timestamp come back in UTC.
* Every database error becomes :class:`~finops_audit.exceptions.AuditStorageError`
  naming the URL with its password masked; the password never appears.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .._anchors import Anchor
from .._chain import Chainer
from ..analytics import ErrorGroup, TimeBucket, ToolStats
from ..exceptions import AuditStorageError
from ..forwarding.postgres import mask_url
from ..maintenance import BackupReport, PurgeReport, VerifyReport
from ..models import AuditLogEntry
from . import _pg_backup
from . import _pg_maintenance as maintenance
from . import _pg_queries as sql
from ._pg_schema import SCHEMA_LOCK_KEY, SCHEMA_STATEMENTS
from .base import LogQuery

__all__ = ["PostgresAuditStore"]

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

_SESSION = (
    "SET plan_cache_mode = force_custom_plan; "
    "SET application_name = 'finops-audit'; "
    "SET TimeZone = 'UTC'"
)


def _secrets(url: str) -> list[str]:
    """The password as written in ``url`` and as decoded, longest first."""
    found: set[str] = set()
    with contextlib.suppress(psycopg.Error):
        password = conninfo_to_dict(url).get("password")
        if password:
            found.add(str(password))
    with contextlib.suppress(ValueError):
        userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
        if at and ":" in userinfo:
            found.add(userinfo.partition(":")[2])
    return sorted((s for s in found if s), key=len, reverse=True)


_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


class PostgresAuditStore:
    """:class:`~finops_audit.storage.base.AuditReader` over a central PostgreSQL database."""

    def __init__(
        self, url: str, *, chainer: Chainer | None = None, connect_timeout: float = 10.0
    ) -> None:
        self._url = url
        self.chainer = chainer
        self._masked = mask_url(url)
        self._secrets = _secrets(url)
        self._connect_timeout = max(1, round(connect_timeout))
        self._conn: Connection | None = None
        self._schema_ready = False

    def describe(self) -> str:
        return self._masked

    def __repr__(self) -> str:
        return f"<PostgresAuditStore {self._masked}>"

    # ------------------------------------------------------------------ connections

    def _error(self, doing: str, exc: BaseException) -> AuditStorageError:
        text = str(exc).strip() or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return AuditStorageError(f"cannot {doing} the central audit store {self._masked}: {text}")

    async def _connect(self) -> Connection:
        extra: dict[str, Any] = {}
        try:
            given = conninfo_to_dict(self._url)
            if "connect_timeout" not in given:
                extra["connect_timeout"] = self._connect_timeout
            # A server that vanishes (network gone, not refused) fails a query
            # in ~30 s instead of the kernel's ~15 minutes, as for the forwarder.
            for key, value in _KEEPALIVES.items():
                if key not in given:
                    extra[key] = value
        except psycopg.Error as exc:
            raise self._error("parse the URL of", exc) from None
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, **extra)
        except (psycopg.Error, OSError) as exc:
            raise self._error("connect to", exc) from None
        try:
            await conn.execute(_SESSION)
        except psycopg.Error as exc:
            await conn.close()
            raise self._error("set up a session on", exc) from None
        return conn

    async def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent, safe to repeat)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = await self._connect()
        if self._schema_ready:
            return
        try:
            await _create_schema(conn)
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                await self._drop()
            raise self._error("create the schema in", exc) from None
        self._schema_ready = True

    async def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or not self._schema_ready:
            await self.open()
        assert self._conn is not None
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    await self._drop()  # e.g. the server restarted: a new session next time
                    if attempt == 1:
                        continue
                raise self._error("read", exc) from None
            except BaseException:
                # cancelled mid-query: the session may hold half a result; start afresh
                self._conn = None
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def _private(self, doing: str) -> AsyncIterator[Connection]:
        """A connection of its own for one maintenance operation; closed after."""
        await self._connection()  # the schema exists
        conn = await self._connect()
        try:
            yield conn
        except AuditStorageError:
            raise
        except (psycopg.Error, OSError) as exc:
            raise self._error(doing, exc) from None
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        await self._drop()

    # ------------------------------------------------------------------ queries

    async def query(self, query: LogQuery) -> list[AuditLogEntry]:
        return [sql.row_to_entry(row) for row in await self._fetch(*sql.build_select(query))]

    async def count(self, query: LogQuery) -> int:
        rows = await self._fetch(*sql.count_sql(query))
        return int(rows[0][0])

    async def page_after(self, query: LogQuery, after_id: int) -> list[AuditLogEntry]:
        rows = await self._fetch(*sql.page_sql(query, after_id))
        return [sql.row_to_entry(row) for row in rows]

    async def rows_after(self, query: LogQuery, after_id: int) -> list[dict[str, Any]]:
        rows = await self._fetch(*sql.page_sql(query, after_id))
        return [sql.row_to_dict(row) for row in rows]

    async def tool_stats(self, query: LogQuery) -> list[ToolStats]:
        rows = await self._fetch(*sql.tool_stats_sql(query))
        return [ToolStats.from_row(row) for row in rows]

    async def slowest(self, query: LogQuery) -> list[AuditLogEntry]:
        return [sql.row_to_entry(row) for row in await self._fetch(*sql.slowest_sql(query))]

    async def error_groups(self, query: LogQuery) -> list[ErrorGroup]:
        rows = await self._fetch(*sql.error_groups_sql(query))
        return [
            ErrorGroup(tool_name=tool, error_message=error, count=n, first_seen=a, last_seen=b)
            for tool, error, n, a, b in rows
        ]

    async def time_buckets(self, query: LogQuery, seconds: int) -> list[TimeBucket]:
        rows = await self._fetch(*sql.buckets_sql(query, seconds))
        return [
            TimeBucket(
                start=datetime.fromtimestamp(bucket, tz=timezone.utc), calls=calls, failures=fails
            )
            for bucket, calls, fails in rows
        ]

    # ------------------------------------------------------------------ maintenance

    async def verify(
        self, chainer: Chainer, anchors: Sequence[Anchor] = (), anchor_source: str = ""
    ) -> VerifyReport:
        """Check every replica's hash chain (see :func:`_pg_verify.verify`).

        Anchor files are for SQLite trails; the service never passes them here.
        """
        async with self._private("verify") as conn:
            return await maintenance.verify(conn, chainer)

    async def purge(self, cutoff: datetime, chainer: Chainer) -> PurgeReport:
        """Drop whole months older than ``cutoff``, delete the rest in batches, checkpointed."""
        async with self._private("purge") as conn:
            return await maintenance.purge(conn, chainer, cutoff)

    async def backup(self, dest: Path) -> BackupReport:
        """``pg_dump --format=custom`` of the audit tables, from one snapshot, mode 0600."""
        async with self._private("back up") as conn:
            return await _pg_backup.backup(conn, self._url, dest, self._error)


async def _create_schema(conn: Connection) -> None:
    """The schema, as the forwarders create it, unless its tables already exist.

    A reader's role may lack the CREATE privilege: when the tables exist,
    nothing is created. Otherwise the statements run under the forwarders'
    schema lock, so processes starting together take turns.
    """
    cur = await conn.execute(_SCHEMA_COMPLETE)
    row = await cur.fetchone()
    if row is not None and all(row):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        for statement in SCHEMA_STATEMENTS:
            await conn.execute(statement)


_SCHEMA_COMPLETE = """
SELECT to_regclass('audit_logs') IS NOT NULL,
       to_regclass('audit_replicas') IS NOT NULL,
       to_regclass('audit_checkpoints') IS NOT NULL
"""
