"""One trail, two stores: the same rows in a SQLite file and in the central PostgreSQL.

Two trails are built once per module, each through the real write path:

* ``fleet``: tool calls through ``AuditService`` and the decorators (caller
  context, labels, failures, unicode, LIKE metacharacters, redacted secrets,
  HMAC pseudonyms, a keyed hash chain);
* ``history``: rows with chosen timestamps across three months through
  ``SQLiteAuditStore.write_batch`` (NULL and tied durations, a gap marker,
  rows from before the hash chain existed), for analytics, buckets and purge.

The PostgreSQL copy is made the way a replica's forwarder makes it: committed
buffer rows read with plain ``sqlite3`` (``BUFFER_COLUMNS``), handed in small
batches to the real :class:`~finops_audit.forwarding.postgres.PostgresSink`.
With one replica loaded in order into an empty database, central ids equal the
buffer's ids, so entries compare equal across stores (but for ``replica_id``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import pytest_asyncio

from finops_audit import AuditLogEntry, AuditService, audit_context, audit_tool_sync
from finops_audit._chain import GENESIS, Chainer
from finops_audit.forwarding.base import BUFFER_COLUMNS, BufferedRow, ReplicaInfo
from finops_audit.storage.base import AuditReader, LogQuery
from finops_audit.storage.sqlite import SQLiteAuditStore, create_private_file, format_timestamp

psycopg = pytest.importorskip("psycopg")

HMAC_KEY = "shared-suite-key-0123456789abcdef-xyz"
FLEET_CHAINER = Chainer(HMAC_KEY.encode())
HISTORY_CHAINER = Chainer()
REPLICA = "replica-a"
ACCOUNT = "123456789012"
SECRET = "sk-live-0123456789abcdef"

KINDS = ["sqlite", "postgres"]


@dataclass(frozen=True)
class Trail:
    """A SQLite trail and the chainer that verifies it."""

    path: Path
    chainer: Chainer


# ---------------------------------------------------------------------- the fleet trail


def _build_fleet(path: Path) -> None:
    with AuditService(
        db_path=path, hmac_key=HMAC_KEY, hmac_fields=["account_id"], flush_interval=0.01
    ) as svc:

        @audit_tool_sync(name="list_policies", service=svc)
        def list_policies(region: str, account_id: str | None = None, verbose: bool = False) -> str:
            return region

        @audit_tool_sync(name="check_tags", service=svc)
        def check_tags(region: str, tags: dict[str, str] | None = None) -> int:
            if region == "mars-1":
                raise ValueError(f"unknown region {region}")
            return len(tags or {})

        @audit_tool_sync(name="estimate_cost", service=svc)
        def estimate_cost(query: str, api_key: str | None = None, amount: float = 0.0) -> float:
            if query == "boom":
                raise KeyError("CostCenter")
            return amount

        @audit_tool_sync(name="rare_export", service=svc)
        def rare_export(note: str) -> None:
            return None

        @audit_tool_sync(name="résumé_東京", service=svc)
        def unicode_tool(text: str) -> str:
            return text

        regions = ["eu-west-3", "us-east-1", "ap-south-1", "mars-1", "us-west-2"]
        notes = [
            "100%_off",
            "100x_off",
            "1000_offers",
            'a "quoted" word',
            "back\\slash",
            "Zürich ☃ 東京",
            "line1\nline2",
            "MiXeD CaSe",
            "tab\there",
        ]
        people = [
            {"user": "alice", "client_name": "claude-desktop", "session_id": "s1"},
            {"user": "bob", "client_name": "cursor", "session_id": "s2", "team": "finops"},
            {"user": "carol", "client_name": "claude-desktop", "session_id": "s1"},
            {},
        ]
        for i in range(48):
            who = dict(people[(i + i // 4) % len(people)])  # every person calls every tool
            if who:
                who["request_id"] = f"req-{i}"
            if i % 3 == 1:
                who["env"] = "prod"
            with audit_context(**who):
                region = regions[i % len(regions)]
                kind = i % 4
                try:
                    if kind == 0:
                        list_policies(region, account_id=ACCOUNT if i % 8 == 0 else None)
                    elif kind == 1:
                        check_tags(region, tags={"z": "1", "a": notes[i % len(notes)]})
                    elif kind == 2:
                        estimate_cost(
                            "boom" if i % 10 == 2 else notes[i % len(notes)],
                            api_key=SECRET if i % 5 == 0 else None,
                            amount=i * 1.25,
                        )
                    else:
                        unicode_tool(notes[i % len(notes)])
                except (ValueError, KeyError):
                    pass
        rare_export("quarterly")


# ---------------------------------------------------------------------- the history trail

T0 = datetime(2025, 3, 30, 12, 0, 0, tzinfo=timezone.utc)
GAP_TOOL = "__audit_gap__"

_V0_SCHEMA = """
CREATE TABLE audit_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    parameters TEXT NOT NULL,
    status TEXT NOT NULL,
    error_message TEXT,
    execution_time_ms REAL
);
"""

#: (hours after T0, tool, duration or None, error or None) of the chained rows.
HISTORY: list[tuple[float, str, float | None, str | None]] = [
    (0.5, "alpha", 10.0, None),
    (1.0, "alpha", 10.0, None),
    (2.0, "beta", None, None),
    (3.0, "alpha", 30.0, "ValueError: bad month"),
    (36.0, "alpha", None, None),  # 2025-03-31T24:00 = the first of April
    (35.99, "beta", 7.5, None),  # end of March, committed after an April call
    (48.0, "beta", None, "TimeoutError: slow"),
    (72.0, "gamma", 1.0, None),
    (72.0, "gamma", 1.0, None),  # same instant: a tie on time and duration
    (100.0, "alpha", 10.0, None),
    (120.0, "beta", 2.0, None),
    (150.0, GAP_TOOL, 0.0, "AuditGap: 3 audit entries were dropped"),
    (200.0, "alpha", 99.5, "ValueError: bad month"),
    (300.0, "gamma", 1.0, None),
    (400.0, "alpha", 12.25, None),
    (401.0, "beta", None, None),
    (500.0, "gamma", 3.0, "KeyError: 'tags'"),
    (640.0, "alpha", 10.0, None),
    (700.0, "delta", 0.125, None),
    (760.0, "alpha", 11.0, None),
    (770.0, "beta", 4.0, None),
    (780.0, "gamma", 2.0, None),
    (790.0, "alpha", 10.0, "ValueError: bad month"),
    (800.0, "alpha", 5.0, None),
    (801.0, "beta", 0.0, None),
]


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _history_rows() -> list[tuple[Any, ...]]:
    rows = []
    for i, (hours, tool, ms, error) in enumerate(HISTORY):
        params = {"n": i, "z": "last", "a": [1, 2.5, None], "big": 2**70, "float": 1e20}
        caller: tuple[Any, ...] = (None,) * 9
        if i % 3 == 0:
            labels = orjson.dumps({"team": "finops", "a": str(i)}).decode()
            caller = ("dora", "cli", "1.0", f"s{i % 2}", str(i), None, None, None, labels)
        rows.append(
            (
                format_timestamp(at(hours)),
                tool,
                json.dumps(params, separators=(",", ":")),  # orjson refuses 2**70
                "FAILURE" if error else "SUCCESS",
                error,
                ms,
                *caller,
            )
        )
    return rows


def _build_history(path: Path) -> None:
    create_private_file(path)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_V0_SCHEMA)
        with conn:  # rows written before the hash chain existed (schema v0)
            for i, hours in enumerate((-2.0, -1.5, -1.0)):
                conn.execute(
                    "INSERT INTO audit_logs (timestamp, tool_name, parameters, status, "
                    "error_message, execution_time_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        format_timestamp(at(hours)),
                        "alpha",
                        f'{{"legacy": {i}}}',
                        "SUCCESS",
                        None,
                        20.0,
                    ),
                )
    finally:
        conn.close()

    async def write() -> None:
        rows = _history_rows()
        store = SQLiteAuditStore(path, chainer=HISTORY_CHAINER)
        await store.open()
        try:
            for start in range(0, len(rows), 4):
                await store.write_batch(rows[start : start + 4])
        finally:
            await store.close()

    asyncio.run(write())


# ---------------------------------------------------------------------- loading PostgreSQL


def buffer_rows(path: Path) -> tuple[list[BufferedRow], int]:
    """Every committed row of a buffer, and its ``legacy_through``, with plain sqlite3."""
    conn = sqlite3.connect(path)
    try:
        columns = ", ".join(f'"{c}"' for c in BUFFER_COLUMNS)
        rows = [
            BufferedRow(*row)
            for row in conn.execute(f"SELECT {columns} FROM audit_logs ORDER BY id")
        ]
        meta = conn.execute("SELECT value FROM audit_meta WHERE key = 'legacy_through'").fetchone()
    finally:
        conn.close()
    return rows, int(meta[0]) if meta else 0


def load(
    path: Path,
    url: str,
    chainer: Chainer,
    replica_id: str = REPLICA,
    *,
    batch: int = 7,
    buffer_id: str | None = None,
    after: int = 0,
) -> str:
    """Forward ``path``'s rows with ``id > after`` to ``url`` as a forwarder does.

    Small batches, each with the chain hash before it; returns the buffer id
    (pass it again to forward the same buffer's later rows).
    """
    from finops_audit.forwarding.postgres import PostgresSink

    rows, legacy_through = buffer_rows(path)
    buffer_id = buffer_id or uuid.uuid4().hex
    replica = ReplicaInfo(replica_id, buffer_id, legacy_through)
    sink = PostgresSink(url, chainer)
    try:
        prev = GENESIS
        for row in rows:
            if row.seq > after:
                break
            prev = row.row_hash or GENESIS
        pending = [row for row in rows if row.seq > after]
        for start in range(0, len(pending), batch):
            chunk = pending[start : start + batch]
            sink.send(replica, chunk, prev)
            prev = chunk[-1].row_hash or GENESIS
    finally:
        sink.close()
    return buffer_id


# ---------------------------------------------------------------------- databases


def _database_url(admin_dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def pg_database(pg_admin_dsn: str) -> Iterator[Callable[[], str]]:
    """``make()``: a new empty database for this module; all dropped at its end."""
    made: list[str] = []

    def make() -> str:
        name = f"shared_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return _database_url(pg_admin_dsn, name)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _clean_env() -> pytest.MonkeyPatch:
    import os

    patch = pytest.MonkeyPatch()
    for name in list(os.environ):
        if name.upper().startswith("AUDIT_"):
            patch.delenv(name)
    return patch


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    path = tmp_path_factory.mktemp("fleet") / "fleet.db"
    patch = _clean_env()
    try:
        _build_fleet(path)
    finally:
        patch.undo()
    return Trail(path, FLEET_CHAINER)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    path = tmp_path_factory.mktemp("history") / "history.db"
    _build_history(path)
    return Trail(path, HISTORY_CHAINER)


@pytest.fixture(scope="module")
def history2(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    """Another replica's history: same rows and chainer, its own event ids."""
    path = tmp_path_factory.mktemp("history2") / "history2.db"
    _build_history(path)
    return Trail(path, HISTORY_CHAINER)


@pytest.fixture(scope="module")
def fleet_pg(pg_database: Callable[[], str], fleet: Trail) -> str:
    url = pg_database()
    load(fleet.path, url, fleet.chainer)
    return url


@pytest.fixture(scope="module")
def history_pg(pg_database: Callable[[], str], history: Trail) -> str:
    url = pg_database()
    load(history.path, url, history.chainer)
    return url


def entries_of(path: Path) -> list[AuditLogEntry]:
    """Every entry of a SQLite trail, oldest first (the reference answers)."""

    async def read() -> list[AuditLogEntry]:
        store = SQLiteAuditStore(path)
        try:
            return await store.page_after(LogQuery(limit=100_000), 0)
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture(scope="module")
def fleet_entries(fleet: Trail) -> list[AuditLogEntry]:
    return entries_of(fleet.path)


@pytest.fixture(scope="module")
def history_entries(history: Trail) -> list[AuditLogEntry]:
    return entries_of(history.path)


# ---------------------------------------------------------------------- stores


def make_store(kind: str, path: Path | None = None, url: str | None = None) -> AuditReader:
    if kind == "sqlite":
        assert path is not None
        return SQLiteAuditStore(path)
    from finops_audit.storage.postgres import PostgresAuditStore

    assert url is not None
    return PostgresAuditStore(url)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def store(
    kind: str, fleet: Trail, request: pytest.FixtureRequest
) -> AsyncIterator[AuditReader]:
    """The fleet trail, read-only, in each store."""
    url = request.getfixturevalue("fleet_pg") if kind == "postgres" else None
    reader = make_store(kind, fleet.path, url)
    yield reader
    await reader.close()


@pytest_asyncio.fixture
async def history_store(
    kind: str, history: Trail, request: pytest.FixtureRequest
) -> AsyncIterator[AuditReader]:
    """The history trail, read-only, in each store."""
    url = request.getfixturevalue("history_pg") if kind == "postgres" else None
    reader = make_store(kind, history.path, url)
    yield reader
    await reader.close()


@pytest_asyncio.fixture
async def both(fleet: Trail, fleet_pg: str) -> AsyncIterator[tuple[AuditReader, AuditReader]]:
    """The fleet trail in SQLite and in PostgreSQL, side by side."""
    pair = (make_store("sqlite", fleet.path), make_store("postgres", url=fleet_pg))
    yield pair
    for reader in pair:
        await reader.close()


@pytest_asyncio.fixture
async def history_both(
    history: Trail, history_pg: str
) -> AsyncIterator[tuple[AuditReader, AuditReader]]:
    pair = (make_store("sqlite", history.path), make_store("postgres", url=history_pg))
    yield pair
    for reader in pair:
        await reader.close()


def copy_sqlite(src: Path, dest: Path) -> Path:
    """A consistent private copy of a SQLite trail (backup API)."""
    source = sqlite3.connect(src)
    try:
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    return dest


@pytest_asyncio.fixture
async def fresh(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[Trail], AuditReader]]:
    """``fresh(trail)``: a private copy of ``trail`` in this test's store, to modify."""
    new_database = request.getfixturevalue("pg_database") if kind == "postgres" else None
    made: list[AuditReader] = []

    def make(trail: Trail) -> AuditReader:
        if kind == "sqlite":
            path = copy_sqlite(trail.path, tmp_path / f"copy-{len(made)}.db")
            reader = make_store(kind, path)
        else:
            assert new_database is not None
            url = new_database()
            load(trail.path, url, trail.chainer)
            reader = make_store(kind, url=url)
        made.append(reader)
        return reader

    yield make
    for reader in made:
        await reader.close()
