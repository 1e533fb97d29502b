"""The central reader's own behaviour: connections, sessions, schema, errors, secrets."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from finops_audit.exceptions import AuditStorageError
from finops_audit.storage.base import AuditReader, LogQuery
from finops_audit.storage.postgres import PostgresAuditStore

from .conftest import FLEET_CHAINER, HISTORY_CHAINER, Trail, load

pytestmark = pytest.mark.asyncio


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://auditor:s3cr3t@db:5432/audit", "postgresql://auditor:***@db:5432/audit"),
        (
            "postgresql://auditor@db/audit?password=s3cr3t",
            "postgresql://auditor@db/audit?password=***",
        ),
        ("postgresql://db/audit", "postgresql://db/audit"),
        (
            "host=db user=auditor password=s3cr3t dbname=audit",
            "host=db user=auditor password=*** dbname=audit",
        ),
    ],
)
async def test_describe_never_shows_the_password(url: str, shown: str) -> None:
    store = PostgresAuditStore(url)
    assert store.describe() == shown
    assert "s3cr3t" not in repr(store)
    await store.close()


async def test_an_unreachable_server_is_a_storage_error_without_the_password() -> None:
    url = f"postgresql://auditor:s3cr3t-pw@127.0.0.1:{closed_port()}/nowhere?connect_timeout=1"
    store = PostgresAuditStore(url)
    try:
        for ask in (
            store.query(LogQuery()),
            store.count(LogQuery()),
            store.verify(FLEET_CHAINER),
        ):
            with pytest.raises(AuditStorageError) as info:
                await ask
            message = str(info.value)
            assert "s3cr3t-pw" not in message
            assert "auditor:***@127.0.0.1" in message
            assert isinstance(info.value, OSError)
    finally:
        await store.close()


async def test_an_empty_database_gets_the_schema_and_answers_nothing(pg_url: str) -> None:
    stores = [PostgresAuditStore(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))  # processes starting together
        store = stores[0]
        await store.open()  # idempotent
        assert await store.query(LogQuery()) == []
        assert await store.count(LogQuery()) == 0
        assert await store.page_after(LogQuery(), 0) == []
        assert await store.tool_stats(LogQuery()) == []
        assert await store.error_groups(LogQuery()) == []
        assert await store.time_buckets(LogQuery(), 60) == []
        report = await store.verify(FLEET_CHAINER)
        assert report.ok
        assert report.rows_checked == 0
    finally:
        for s in stores:
            await s.close()
            await s.close()  # twice is fine


async def test_sessions_are_named_and_force_custom_plans(fleet_pg: str) -> None:
    store = PostgresAuditStore(fleet_pg)
    try:
        rows = await store._fetch(
            "SELECT current_setting('plan_cache_mode'), current_setting('application_name'), "
            "current_setting('TimeZone')",
            (),
        )
        assert rows == [("force_custom_plan", "finops-audit", "UTC")]
    finally:
        await store.close()


async def test_a_broken_connection_is_replaced(fleet_pg: str, pg_admin_dsn: str) -> None:
    store = PostgresAuditStore(fleet_pg)
    try:
        before = await store.count(LogQuery())
        name = urlsplit(fleet_pg).path.lstrip("/")
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = 'finops-audit'",
                (name,),
            ).fetchone()
        assert killed == (1,)
        assert await store.count(LogQuery()) == before  # retried once on a new session
    finally:
        await store.close()


async def test_a_role_that_may_only_read(
    fleet_pg: str, pg_admin_dsn: str, both: tuple[AuditReader, AuditReader]
) -> None:
    """An auditor's account without CREATE: the schema is there, so nothing is created."""
    role = f"auditor_ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fleet_pg, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    parts = urlsplit(fleet_pg)
    reader_url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    store = PostgresAuditStore(reader_url)
    try:
        try:
            assert await store.count(LogQuery()) == 49
        except AuditStorageError as exc:
            if "authentication" in str(exc):
                pytest.skip(f"the test server does not let a new role log in: {exc}")
            raise
        assert (await store.verify(FLEET_CHAINER)).ok
        assert await store.tool_stats(LogQuery()) == await both[0].tool_stats(LogQuery())
        with pytest.raises(AuditStorageError, match="permission denied"):
            await store.purge(datetime(2000, 1, 1, tzinfo=timezone.utc), FLEET_CHAINER)
    finally:
        await store.close()
        with psycopg.connect(fleet_pg, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


async def test_a_cancelled_query_leaves_a_usable_store(fleet_pg: str) -> None:
    store = PostgresAuditStore(fleet_pg)
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(store._fetch("SELECT pg_sleep(30)", ()), timeout=0.2)
        assert await store.count(LogQuery()) == 49
    finally:
        await store.close()


async def test_purge_waits_for_a_reader_holding_the_table(
    pg_database: Callable[[], str], history: Trail
) -> None:
    """Dropping a month needs audit_logs alone for a moment: a long reader delays it,
    it does not fail it, and nothing is lost."""
    url = pg_database()
    load(history.path, url, history.chainer)
    store = PostgresAuditStore(url)
    blocker = await psycopg.AsyncConnection.connect(url)
    try:
        await blocker.execute("SELECT count(*) FROM audit_logs")  # ACCESS SHARE until commit
        purge = asyncio.ensure_future(
            store.purge(datetime(2025, 4, 15, tzinfo=timezone.utc), HISTORY_CHAINER)
        )
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as probe:
            for _ in range(500):  # bounded poll: until the purge waits for the lock
                cur = await probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'finops-audit' AND wait_event_type = 'Lock'"
                )
                if (await cur.fetchone()) == (1,) or purge.done():
                    break
                await asyncio.sleep(0.01)
        assert not purge.done()
        await blocker.commit()
        report = await purge
        assert report.rows_deleted == 17
        assert (await store.verify(HISTORY_CHAINER)).ok
    finally:
        await blocker.close()
        await store.close()
