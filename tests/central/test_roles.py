"""Least privilege on the central store: each role can do its job and only its job (issue 14).

``finops-audit central init-roles`` (run as an admin) makes the writer, reader
and maintainer roles; the tests then log in as a user in each role and prove
that forwarding works as the writer, reading as the reader, purging as the
maintainer, and that a writer's UPDATE, DELETE and SELECT, a reader's writes
and a purge by anyone but the maintainer are refused by PostgreSQL itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import errors

from finops_audit import AuditService, audit_tool_sync
from finops_audit.exceptions import AuditStorageError, AuditTimeoutError
from finops_audit.storage._pg_roles import role_statements
from tests.encryption._crypto import RING_OLD
from tests.operations._util import cli_env, run_cli


def _as(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def roles(pg_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """init-roles through the CLI as the admin, then one login user per role."""
    done = run_cli("central", "init-roles", cwd=tmp_path, env=cli_env(AUDIT_DB_URL=pg_url))
    assert done.returncode == 0, done.stderr
    assert "finops_audit_writer" in done.stdout
    suffix = uuid.uuid4().hex[:8]
    users = {job: f"{job}_{suffix}" for job in ("writer", "reader", "maintainer")}
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for job, user in users.items():
            admin.execute(f"CREATE ROLE {user} LOGIN IN ROLE finops_audit_{job}")
    yield {job: _as(pg_url, user) for job, user in users.items()}
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for user in users.values():
            admin.execute(f"DROP ROLE IF EXISTS {user}")


def _forward(
    url: str, buffer: Path, calls: int, replica: str = "replica-a", timeout: float = 60
) -> None:
    service = AuditService(buffer, db_url=url, replica_id=replica, encryption_keys=RING_OLD)
    try:

        @audit_tool_sync(service=service)
        def lookup(n: int) -> int:
            return n

        for n in range(calls):
            lookup(n)
        service.forward(timeout=timeout)  # raises unless every row was accepted
    finally:
        service.close()


def _refused(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)  # type: ignore[arg-type]


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM audit_logs").fetchone()
    assert row is not None
    return int(row[0])


def test_forwarding_reading_and_purging_each_under_its_own_role(
    roles: dict[str, str], tmp_path: Path
) -> None:
    _forward(roles["writer"], tmp_path / "a.db", 20)
    _forward(roles["writer"], tmp_path / "b.db", 5, replica="replica-b")
    # a batch sent again inserts nothing, and needs no more than INSERT
    _forward(roles["writer"], tmp_path / "a.db", 0)
    assert _count(roles["reader"]) == 25
    with AuditService(
        tmp_path / "r.db", db_url=roles["reader"], read_only=True, encryption_keys=RING_OLD
    ) as reader:
        entries = reader.get_logs(limit=100)
        assert sorted(e.parameters["n"] for e in entries if e.replica_id == "replica-a") == list(
            range(20)
        )
        assert reader.verify().ok
        with pytest.raises(AuditStorageError, match="permission denied"):
            reader.purge(timedelta(microseconds=1))
    logs = run_cli(
        "logs", "--json", "--limit", "3", cwd=tmp_path, env=cli_env(AUDIT_DB_URL=roles["reader"])
    )
    assert logs.returncode == 0, logs.stderr
    assert len(logs.stdout.splitlines()) == 3
    with AuditService(tmp_path / "w.db", db_url=roles["writer"], read_only=True) as writer:
        with pytest.raises(AuditStorageError, match="permission denied"):
            writer.get_logs()
        with pytest.raises(AuditStorageError, match="permission denied"):
            writer.purge(timedelta(microseconds=1))
    with AuditService(tmp_path / "m.db", db_url=roles["maintainer"], read_only=True) as keeper:
        report = keeper.purge(timedelta(microseconds=1))
        assert report.rows_deleted == 25
        assert keeper.verify().ok
    assert _count(roles["reader"]) == 0


def test_the_writer_cannot_update_delete_or_read(roles: dict[str, str], tmp_path: Path) -> None:
    _forward(roles["writer"], tmp_path / "a.db", 3)
    writer = roles["writer"]
    _refused(writer, "UPDATE audit_logs SET tool_name = 'forged'")
    _refused(writer, "DELETE FROM audit_logs")
    _refused(writer, "SELECT parameters_text FROM audit_logs")
    _refused(writer, "SELECT count(*) FROM audit_logs")
    _refused(writer, "TRUNCATE audit_logs")
    _refused(writer, "DROP TABLE audit_logs")
    _refused(writer, "DELETE FROM audit_replicas")
    _refused(writer, "UPDATE audit_replicas SET anchor_hash = 'x', signature = 'y'")
    _refused(writer, "SELECT signature FROM audit_replicas")
    _refused(writer, "DELETE FROM audit_checkpoints")
    _refused(
        writer,
        "INSERT INTO audit_checkpoints (replica_id, through_seq, last_hash, "
        "rows_purged, signature) VALUES ('r', 1, 'h', 1, 's')",
    )
    _refused(writer, "DELETE FROM audit_anchors")
    _refused(writer, "ALTER TABLE audit_logs DETACH PARTITION audit_logs_200001")
    _refused(writer, "CREATE TABLE sneaky (x int)")
    assert _count(roles["reader"]) == 3


def test_the_reader_cannot_write(roles: dict[str, str], tmp_path: Path) -> None:
    _forward(roles["writer"], tmp_path / "a.db", 2)
    reader = roles["reader"]
    _refused(reader, "UPDATE audit_logs SET tool_name = 'forged'")
    _refused(reader, "DELETE FROM audit_logs")
    _refused(
        reader,
        "INSERT INTO audit_logs (event_id, replica_id, seq, timestamp, tool_name, parameters, "
        "status) VALUES (gen_random_uuid(), 'r', 99, now(), 't', '{}', 'SUCCESS')",
    )
    _refused(reader, "UPDATE audit_replicas SET forwarded_rows = 0")
    _refused(reader, "DELETE FROM audit_anchors")
    _refused(reader, "CREATE TABLE sneaky (x int)")
    with pytest.raises(AuditTimeoutError, match="permission denied for table audit_logs"):
        _forward(reader, tmp_path / "b.db", 1, replica="replica-r", timeout=3)
    assert _count(reader) == 2


def test_the_maintainer_manages_partitions(roles: dict[str, str], tmp_path: Path) -> None:
    env = cli_env(AUDIT_DB_URL=roles["maintainer"])
    again = run_cli(
        "central", "init-roles", "--partitions-only", "--months-ahead", "30", cwd=tmp_path, env=env
    )
    assert again.returncode == 0, again.stderr
    with psycopg.connect(roles["reader"]) as conn:
        parts = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_logs'::regclass"
        ).fetchone()
    assert parts is not None
    assert parts[0] >= 31
    denied = run_cli(
        "central",
        "init-roles",
        "--partitions-only",
        "--months-ahead",
        "40",
        cwd=tmp_path,
        env=cli_env(AUDIT_DB_URL=roles["writer"]),
    )
    assert denied.returncode == 1
    assert "permission denied" in denied.stderr or "must be owner" in denied.stderr


def test_the_role_sql_is_printable_and_idempotent(pg_url: str, tmp_path: Path) -> None:
    printed = run_cli("central", "init-roles", "--print-sql", cwd=tmp_path, env=cli_env())
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip().splitlines()[-1].endswith(";")
    assert "GRANT INSERT ON audit_logs TO finops_audit_writer;" in printed.stdout
    for _ in range(2):
        done = run_cli("central", "init-roles", cwd=tmp_path, env=cli_env(AUDIT_DB_URL=pg_url))
        assert done.returncode == 0, done.stderr
    assert len(role_statements()) > 10


def test_a_writer_forwards_when_next_months_partition_is_missing(
    pg_url: str, tmp_path: Path
) -> None:
    from finops_audit.storage._pg_roles import init_roles

    init_roles(pg_url, months_ahead=0)  # this month and last, nothing ahead
    user = f"writer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {user} LOGIN IN ROLE finops_audit_writer")
    try:
        _forward(_as(pg_url, user), tmp_path / "a.db", 4)  # next month: refused, not fatal
        assert _count(pg_url) == 4
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {user}")
