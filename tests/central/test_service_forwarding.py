"""The service with a central store: forwarding, read-your-writes, lag, CLI, config errors.

Every test uses a real PostgreSQL database (``pg_url``) and real SQLite buffers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from finops_audit import (
    AuditConfigError,
    AuditService,
    AuditStatus,
    AuditTimeoutError,
    audit_context,
    audit_tool,
    audit_tool_sync,
)
from finops_audit.cli import main
from finops_audit.storage._pg_schema import partition_ddl
from tests.helpers import wait_until


def make_calls(svc: AuditService, count: int, name: str = "tool") -> None:
    """``count`` calls of a sync tool audited by ``svc`` under ``name``."""

    @audit_tool_sync(service=svc, name=name)
    def tool(i: int) -> int:
        return i

    for i in range(count):
        assert tool(i=i) == i


def central_rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT replica_id, seq, event_id::text, tool_name, status FROM audit_logs ORDER BY id"
        ).fetchall()


def buffer_cursor(path: Path, sink: str = "postgres") -> int:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT cursor FROM audit_forward WHERE sink = ?", (sink,)).fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://auditor:s3cr3t-pw@127.0.0.1:{port}/nowhere?connect_timeout=1"


def test_get_logs_reads_the_central_store_with_read_your_writes(
    tmp_path: Path, pg_url: str
) -> None:
    with AuditService(db_path=tmp_path / "buf.db", db_url=pg_url, replica_id="r1") as svc:

        @audit_tool_sync(service=svc)
        def get_costs(region: str) -> int:
            return 1

        @audit_tool_sync(service=svc)
        def broken(x: int) -> None:
            raise ValueError("bad x")

        for i in range(25):
            get_costs(region=f"eu-{i}")
        with pytest.raises(ValueError):
            broken(x=3)
        logs = svc.get_logs(limit=100)  # no explicit flush or forward
        assert svc.central
        assert len(logs) == 26
        assert {e.replica_id for e in logs} == {"r1"}
        assert all(e.event_id and len(e.event_id) == 32 for e in logs)
        assert len({e.event_id for e in logs}) == 26
        [failure] = svc.get_logs(status=AuditStatus.FAILURE)
        assert failure.tool_name == "broken"
        assert failure.parameters == {"x": 3}
        assert failure.error_message == "ValueError: bad x"
        assert svc.count() == 26
        assert svc.stats().forward_lag_entries == 0
        assert svc.stats().forward_last_error is None
    rows = central_rows(pg_url)
    assert len(rows) == 26
    assert [r[1] for r in rows] == list(range(1, 27))  # buffer order kept: seq 1..26
    assert buffer_cursor(tmp_path / "buf.db") == 26


def test_event_ids_match_the_buffer(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "buf.db"
    with AuditService(db_path=db, db_url=pg_url) as svc:
        make_calls(svc, 50, "tool")
        svc.forward(timeout=30)
    conn = sqlite3.connect(db)
    local = {r[0] for r in conn.execute("SELECT event_id FROM audit_logs")}
    conn.close()
    central = {r[2].replace("-", "") for r in central_rows(pg_url)}  # type: ignore[union-attr]
    assert local == central
    assert len(local) == 50


def test_async_tools_and_aforward(tmp_path: Path, pg_url: str) -> None:
    async def scenario() -> None:
        async with AuditService(db_path=tmp_path / "buf.db", db_url=pg_url) as svc:

            @audit_tool(service=svc)
            async def fetch(n: int) -> int:
                return n

            async with audit_context(user="alice", session_id="s-1"):
                await asyncio.gather(*(fetch(n=n) for n in range(40)))
            await svc.aforward(timeout=30)
            logs = await svc.aget_logs(user="alice", limit=100)
            assert len(logs) == 40
            assert {e.session_id for e in logs} == {"s-1"}
            stats = await svc.atool_stats()
            assert [(s.tool_name, s.calls) for s in stats] == [("fetch", 40)]

    asyncio.run(scenario())


def test_forward_without_a_reachable_database_raises_a_clear_timeout(tmp_path: Path) -> None:
    db = tmp_path / "buf.db"
    url = closed_port_url()
    svc = AuditService(db_path=db, db_url=url, close_timeout=2, forward_timeout=0.5)

    @audit_tool_sync(service=svc)
    def tool(i: int) -> int:
        return i * 2

    assert [tool(i=i) for i in range(10)] == [i * 2 for i in range(10)]  # tools unaffected
    with pytest.raises(AuditTimeoutError) as info:
        svc.forward(timeout=1)
    message = str(info.value)
    assert "10 entries behind" in message
    assert "s3cr3t-pw" not in message
    assert "127.0.0.1" in message
    wait_until(lambda: svc.stats().forward_last_error is not None, timeout=10)
    stats = svc.stats()
    assert stats.forward_lag_entries == 10
    assert stats.forward_lag_seconds >= 0
    assert "s3cr3t-pw" not in (stats.forward_last_error or "")
    assert stats.forwarding["postgres"].failures >= 1
    svc.close()  # returns: the entries stay in the buffer
    assert buffer_cursor(db) == 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0] == 10
    conn.close()


def test_backlog_left_at_close_is_forwarded_by_the_next_start(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "buf.db"
    with AuditService(db_path=db, db_url=closed_port_url(), forward_timeout=0.2) as svc:
        make_calls(svc, 30, "early")
    assert buffer_cursor(db) == 0  # nothing delivered
    # Same buffer, now with the real database: the backlog goes first.
    with AuditService(db_path=db, db_url=pg_url) as svc:

        @audit_tool_sync(service=svc)
        def late(i: int) -> int:
            return i

        late(i=1)
        svc.forward(timeout=30)
        tools = [r[3] for r in central_rows(pg_url)]
        assert tools == ["early"] * 30 + ["late"]


def test_forwarding_is_duplicate_free_when_the_cursor_is_rewound(
    tmp_path: Path, pg_url: str
) -> None:
    # A crash after the central commit but before the cursor moved re-sends a
    # batch: simulated by rewinding the cursor by hand.
    db = tmp_path / "buf.db"
    with AuditService(db_path=db, db_url=pg_url) as svc:
        make_calls(svc, 100, "tool")
        svc.forward(timeout=30)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE audit_forward SET cursor = 40, lease_owner = NULL")
    conn.commit()
    conn.close()
    with AuditService(db_path=db, db_url=pg_url) as svc:
        svc.forward(timeout=30)
        assert svc.count() == 100
    rows = central_rows(pg_url)
    assert len(rows) == 100
    assert len({r[2] for r in rows}) == 100
    assert buffer_cursor(db) == 100


def test_env_configuration_and_the_bare_decorator(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_DB_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("AUDIT_DB_URL", pg_url)
    monkeypatch.setenv("AUDIT_REPLICA_ID", "replica-env")

    @audit_tool_sync
    def tagged(resource: str) -> str:
        return resource

    tagged(resource="i-123")
    from finops_audit import get_default_service

    svc = get_default_service()
    svc.forward(timeout=30)
    [entry] = svc.get_logs()
    assert entry.replica_id == "replica-env"
    assert entry.parameters == {"resource": "i-123"}


def test_cli_reads_the_fleet_from_the_central_store(tmp_path: Path, pg_url: str) -> None:
    for replica in ("a", "b"):
        with AuditService(
            db_path=tmp_path / f"{replica}.db", db_url=pg_url, replica_id=replica
        ) as svc:

            @audit_tool_sync(service=svc, name=f"tool_{replica}")
            def tool(i: int) -> int:
                return i

            for i in range(5):
                tool(i=i)
            svc.forward(timeout=30)
    runner = CliRunner(env={"AUDIT_DB_URL": pg_url, "COLUMNS": "200"})
    # No local file exists in the working folder: the central trail is read.
    result = runner.invoke(main, ["logs", "--json", "--limit", "100"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 10
    assert {line["replica_id"] for line in lines} == {"a", "b"}
    result = runner.invoke(main, ["stats"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "tool_a" in result.output
    assert "tool_b" in result.output
    result = runner.invoke(main, ["verify"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not (Path.cwd() / "audit_logs.db").exists()


def test_buffer_trim_keeps_unforwarded_rows(tmp_path: Path, pg_url: str) -> None:
    from finops_audit.config import load_settings
    from finops_audit.forwarding._setup import _trim_buffer

    db = tmp_path / "buf.db"
    with AuditService(db_path=db, db_url=pg_url) as svc:
        make_calls(svc, 20, "tool")
        svc.forward(timeout=30)
        forwarder = svc._fleet.forwarders[0]
    # Ten more rows that were never forwarded (written without a central store).
    with AuditService(db_path=db) as local:
        make_calls(local, 10, "later")
    settings = load_settings(db_path=db, db_url=pg_url, buffer_retention_hours=0)
    _trim_buffer(settings, svc._verifier, forwarder)
    conn = sqlite3.connect(db)
    left = [r[0] for r in conn.execute("SELECT tool_name FROM audit_logs ORDER BY id")]
    conn.close()
    assert left == ["later"] * 10
    with AuditService(db_path=db) as local:
        assert local.verify().ok  # the local chain still verifies from its checkpoint


def test_central_purge_and_verify(tmp_path: Path, pg_url: str) -> None:
    with AuditService(db_path=tmp_path / "buf.db", db_url=pg_url) as svc:
        make_calls(svc, 30, "tool")
        svc.forward(timeout=30)
        # Age the first ten rows by three months (into an older partition).
        old = datetime.now(timezone.utc) - timedelta(days=90)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(partition_ddl(old))
            conn.execute("UPDATE audit_logs SET timestamp = %s WHERE seq <= 10", (old,))
        report = svc.purge("30d")
        assert report.rows_deleted == 10
        assert svc.count() == 20
        verdict = svc.verify()  # the rest still verifies, from the purge's checkpoint
        assert verdict.ok, verdict.problem


def test_bad_urls_and_missing_driver_are_clear_config_errors(tmp_path: Path) -> None:
    with pytest.raises(AuditConfigError, match=r"AUDIT_DB_URL|db_url"):
        AuditService(db_path=tmp_path / "x.db", db_url="mysql://root:pw@host/db")
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from finops_audit import AuditService, AuditConfigError\n"
        "try:\n"
        "    AuditService(db_path=sys.argv[1], db_url='postgresql://u:pw@h/db')\n"
        "except AuditConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "y.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "finops-audit[postgres]" in out
    assert "pw" not in out


def test_cli_forward_delivers_a_left_behind_buffer(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "left.db"
    with AuditService(db_path=db, db_url=closed_port_url(), forward_timeout=0.1) as svc:
        make_calls(svc, 12, "tool")
    runner = CliRunner(env={"COLUMNS": "200"})
    down = runner.invoke(
        main,
        ["forward", "--db", str(db), "--timeout", "1"],
        env={"AUDIT_DB_URL": closed_port_url()},
        catch_exceptions=False,
    )
    assert down.exit_code == 1
    assert "12 entries behind" in down.output
    assert "s3cr3t-pw" not in down.output
    up = runner.invoke(
        main, ["forward", "--db", str(db)], env={"AUDIT_DB_URL": pg_url}, catch_exceptions=False
    )
    assert up.exit_code == 0, up.output
    assert "12 entries delivered" in up.output
    assert len(central_rows(pg_url)) == 12
    nothing = runner.invoke(main, ["forward", "--db", str(db)], catch_exceptions=False)
    assert nothing.exit_code != 0
    assert "nothing to forward to" in nothing.output


def test_hourly_maintenance_applies_retention_centrally_and_trims_the_buffer(
    tmp_path: Path, pg_url: str
) -> None:
    from finops_audit.forwarding._setup import _central_maintenance, _trim_buffer

    db = tmp_path / "buf.db"
    svc = AuditService(db_path=db, db_url=pg_url, retention_days=30, buffer_retention_hours=0)

    make_calls(svc, 40, "tool")
    svc.forward(timeout=30)
    old = datetime.now(timezone.utc) - timedelta(days=200)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(partition_ddl(old))
        conn.execute("UPDATE audit_logs SET timestamp = %s WHERE seq <= 15", (old,))
    forwarder = svc._fleet.forwarders[0]
    settings = svc.settings
    _central_maintenance(
        settings, svc._verifier, lambda f: _trim_buffer(settings, svc._verifier, f), forwarder
    )
    assert svc.count() == 25  # the aged rows left the central store
    assert svc.verify().ok
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0] == 0  # all delivered
    conn.close()
    svc.close()


def test_close_with_the_database_down_backs_off_instead_of_spinning(tmp_path: Path) -> None:
    svc = AuditService(db_path=tmp_path / "buf.db", db_url=closed_port_url(), forward_timeout=2)

    make_calls(svc, 5, "tool")
    forwarder = svc._fleet.forwarders[0]
    svc.close()
    # Backoff doubles from 0.1 s: a handful of attempts in two seconds, not thousands.
    assert 1 <= forwarder.stats().failures <= 12


def test_a_query_running_when_the_service_closes_ends_with_a_clear_error(
    tmp_path: Path, pg_url: str
) -> None:
    import threading

    from finops_audit import AuditClosedError

    svc = AuditService(db_path=tmp_path / "buf.db", db_url=pg_url)

    @audit_tool_sync(service=svc)
    def tool(i: int) -> int:
        return i

    tool(i=1)
    svc.forward(timeout=30)
    outcome: list[BaseException | int] = []
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE")  # queries now wait

        def query() -> None:
            try:
                outcome.append(len(svc.get_logs()))
            except BaseException as exc:
                outcome.append(exc)

        reader = threading.Thread(target=query)
        reader.start()
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            wait_until(
                lambda: (
                    watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND application_name = 'finops-audit'"
                    ).fetchone()[0]
                    >= 1
                ),
                timeout=30,
            )
        svc.close()
        reader.join(30)
        assert not reader.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], AuditClosedError)


def test_aclose_does_not_block_the_event_loop_while_forwarding_gives_up(tmp_path: Path) -> None:
    async def scenario() -> bool:
        svc = AuditService(db_path=tmp_path / "buf.db", db_url=closed_port_url(), forward_timeout=1)

        @audit_tool(service=svc)
        async def tool(i: int) -> int:
            return i

        await tool(i=1)
        closing = asyncio.create_task(svc.aclose())
        await asyncio.sleep(0.05)  # the loop runs other tasks while aclose waits
        progressed = not closing.done()
        await closing
        return progressed

    assert asyncio.run(scenario())


def test_an_otlp_collector_down_does_not_stop_central_queries(tmp_path: Path, pg_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with AuditService(
        db_path=tmp_path / "buf.db",
        db_url=pg_url,
        otlp_endpoint=f"http://127.0.0.1:{port}",
        forward_timeout=0.2,
    ) as svc:
        make_calls(svc, 7, "tool")
        assert len(svc.get_logs()) == 7  # read-your-writes waits for PostgreSQL only
        with pytest.raises(AuditTimeoutError, match="OTLP"):
            svc.forward(timeout=0.5)


@pytest.mark.parametrize("replica_id", [None, "fixed-name"])
def test_a_replaced_buffer_is_followed_and_forwarded(
    tmp_path: Path, pg_url: str, replica_id: str | None
) -> None:
    db = tmp_path / "buf.db"
    with AuditService(db_path=db, db_url=pg_url, replica_id=replica_id) as svc:

        @audit_tool_sync(service=svc)
        def tool(i: int) -> int:
            return i

        for i in range(10):
            tool(i=i)
        svc.forward(timeout=30)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        for i in range(5):
            tool(i=i)
        svc.forward(timeout=30)
        assert svc.count() == 15
    replicas = {r[0] for r in central_rows(pg_url)}
    assert len(replicas) == 2  # the new buffer is a new chain
    if replica_id is not None:
        assert replica_id in replicas
        assert any(r.startswith(f"{replica_id}~") for r in replicas)  # type: ignore[union-attr]
    with AuditService(db_path=tmp_path / "reader.db", db_url=pg_url) as reader:
        assert reader.verify().ok


def test_a_restarted_idle_replica_ships_its_backlog_without_a_call(
    tmp_path: Path, pg_url: str
) -> None:
    db = tmp_path / "buf.db"
    with AuditService(db_path=db, db_url=closed_port_url(), forward_timeout=0.1) as svc:
        make_calls(svc, 20, "tool")
    with AuditService(db_path=db, db_url=pg_url):
        wait_until(lambda: buffer_cursor(db) == 20, timeout=30)
    assert len(central_rows(pg_url)) == 20


def test_otlp_alone_keeps_the_local_trail_and_never_purges_unexported_entries(
    tmp_path: Path,
) -> None:
    from finops_audit.forwarding._setup import _local_retention

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = tmp_path / "trail.db"
    svc = AuditService(
        db_path=db,
        otlp_endpoint=f"http://127.0.0.1:{port}",
        retention_days=1,
        forward_timeout=0.1,
    )

    make_calls(svc, 8, "tool")
    svc.flush()
    assert not svc.central  # the SQLite file stays the trail of record
    conn = sqlite3.connect(db)
    conn.execute("UPDATE audit_logs SET timestamp = '2020-01-01T00:00:00.000000+00:00'")
    conn.commit()
    conn.close()
    _local_retention(svc.settings, svc._verifier, svc._fleet.forwarders[0])
    assert svc.count() == 8  # old, but never exported: kept
    svc.close()


def test_a_process_that_exits_without_close_still_delivers_its_backlog(
    tmp_path: Path, pg_url: str
) -> None:
    db = tmp_path / "buf.db"
    with AuditService(db_path=db, db_url=closed_port_url(), forward_timeout=0.1) as svc:
        make_calls(svc, 25, "tool")
    script = (
        "import sys\n"
        "from finops_audit import AuditService\n"
        "svc = AuditService(db_path=sys.argv[1], db_url=sys.argv[2])\n"
        "# no call, no close: the exit hook lets the forwarder deliver the backlog\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(db), pg_url], check=True, timeout=60, cwd=tmp_path
    )
    assert buffer_cursor(db) == 25
    assert len(central_rows(pg_url)) == 25
