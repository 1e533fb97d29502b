"""Files that are not ours are left alone (issue 10, section 4).

Every attack here points a command or a service at a file it must not change:
another application's database (rollback journal or WAL), an empty file, a
file that is not SQLite, a foreign ``audit_logs`` table, a trail of a newer
schema. The proof is the file's checksum and its folder's listing, taken
before and after; a real trail read by every reading command is checked the
same way (no ``-wal``/``-shm`` left where there were none).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from finops_audit import AuditService, AuditStorageError, AuditTimeoutError, audit_tool_sync
from finops_audit.cli import main
from finops_audit.storage.sqlite import SCHEMA_VERSION

from ._util import cli_env, no_traceback, run_cli

READERS: list[list[str]] = [
    ["logs"],
    ["logs", "--value", "x"],
    ["tail", "-n", "3"],
    ["stats"],
    ["export", "OUT.jsonl"],
    ["verify"],
    ["backup", "BACKUP.db"],
]
WRITERS: list[list[str]] = [["purge", "--older-than", "1d", "--yes"]]


def fingerprint(path: Path) -> tuple[str, list[str]]:
    """The file's SHA-256 and every name in its folder."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, sorted(p.name for p in path.parent.iterdir())


def _other_app(path: Path, wal: bool = False) -> None:
    conn = sqlite3.connect(path)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        conn.commit()
    finally:
        conn.close()


def _foreign_audit_logs(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE audit_logs (id INTEGER PRIMARY KEY, action TEXT, who TEXT)")
        conn.execute("INSERT INTO audit_logs (action, who) VALUES ('login', 'ada')")
        conn.commit()
    finally:
        conn.close()


FOREIGN: dict[str, tuple[Callable[[Path], None], str]] = {
    "other-app": (_other_app, "another application's tables (users)"),
    "other-app-wal": (lambda p: _other_app(p, wal=True), "another application's tables (users)"),
    "empty-file": (lambda p: p.write_bytes(b""), "the database is empty"),
    "not-sqlite": (lambda p: p.write_text("name,amount\nada,3\n" * 50), "not a SQLite database"),
    "foreign-audit_logs": (_foreign_audit_logs, "its audit_logs table has no timestamp"),
}


def _trail(path: Path, calls: int = 5) -> None:
    with AuditService(path) as service:

        @audit_tool_sync(name="lookup", service=service)
        def lookup(account: str, region: str) -> str:
            return region

        for i in range(calls):
            lookup(account=f"acct-{i}", region="eu-west-1")


def _invoke(args: list[str], db: Path) -> tuple[int, str]:
    folder = db.parent
    args = [str(folder / a) if a.startswith(("OUT", "BACKUP")) else a for a in args]
    result = CliRunner().invoke(main, [*args, "--db", str(db)])
    return result.exit_code, result.output


@pytest.mark.parametrize("kind", sorted(FOREIGN))
@pytest.mark.parametrize("args", READERS + WRITERS, ids=lambda a: a[0] + "-".join(a[1:2]))
def test_a_file_that_is_not_a_trail_is_one_error_and_unchanged(
    tmp_path: Path, kind: str, args: list[str]
) -> None:
    db = tmp_path / f"{kind}.db"
    make, reason = FOREIGN[kind]
    make(db)
    before = fingerprint(db)
    code, output = _invoke(args, db)
    assert code == 1
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert str(db) in lines[0]
    assert "not a finops_audit trail" in lines[0]
    assert reason in lines[0]
    assert fingerprint(db) == before  # same bytes, no -wal/-shm, no OUT or BACKUP file


def test_a_foreign_file_through_the_real_cli(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _other_app(db, wal=True)
    before = fingerprint(db)
    done = run_cli("logs", "--db", str(db), cwd=tmp_path, env=cli_env())
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 1
    assert "not a finops_audit trail" in done.stderr
    assert str(db) in done.stderr
    assert fingerprint(db) == before


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0] + "-".join(a[1:2]))
def test_reading_a_closed_trail_changes_nothing(tmp_path: Path, args: list[str]) -> None:
    """A trail in WAL mode with no -wal/-shm (its writer closed): every reader leaves it so."""
    db = tmp_path / "trail.db"
    _trail(db)
    assert fingerprint(db)[1] == ["trail.db"]
    digest = fingerprint(db)[0]
    code, output = _invoke(args, db)
    assert code == 0, output
    assert fingerprint(db)[0] == digest
    left = set(fingerprint(db)[1]) - {"trail.db", "OUT.jsonl", "BACKUP.db"}
    assert left == set()


def test_reading_beside_a_live_writer_keeps_its_files(tmp_path: Path) -> None:
    """Companions in use are left alone, and the writer goes on writing."""
    db = tmp_path / "trail.db"
    with AuditService(db) as service:

        @audit_tool_sync(name="lookup", service=service)
        def lookup(region: str) -> str:
            return region

        lookup("eu-west-1")
        service.flush()
        assert {"trail.db-wal", "trail.db-shm"} <= set(fingerprint(db)[1])
        for args in READERS:
            code, output = _invoke(args, db)
            assert code == 0, (args, output)
            (tmp_path / "OUT.jsonl").unlink(missing_ok=True)
            (tmp_path / "BACKUP.db").unlink(missing_ok=True)
        assert {"trail.db-wal", "trail.db-shm"} <= set(fingerprint(db)[1])
        lookup("eu-west-2")
        service.flush()
        assert [e.parameters["region"] for e in service.get_logs()] == ["eu-west-2", "eu-west-1"]


def test_a_design_note_trail_is_read_without_upgrading_it(tmp_path: Path) -> None:
    """Schema version 0 (the seed's table only): readable, verifiable, and left at version 0."""
    db = tmp_path / "seed.db"
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "CREATE TABLE audit_logs (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT "
            "NULL, tool_name TEXT NOT NULL, parameters TEXT NOT NULL, status TEXT NOT NULL, "
            "error_message TEXT, execution_time_ms REAL)"
        )
        conn.execute(
            "INSERT INTO audit_logs (timestamp, tool_name, parameters, status, "
            "execution_time_ms) VALUES ('2025-06-01T12:00:00+00:00', 'get_cost_report', "
            "'{\"month\": \"2025-05\"}', 'SUCCESS', 2.5)"
        )
        conn.commit()
    finally:
        conn.close()
    before = fingerprint(db)
    code, output = _invoke(["logs", "--value", "2025-05"], db)
    assert code == 0, output
    assert "get_cost_report" in output
    code, output = _invoke(["verify"], db)
    assert code == 0, output
    assert "OK" in output
    with AuditService(db, read_only=True) as reader:
        (entry,) = reader.get_logs()
        assert entry.parameters == {"month": "2025-05"}
        assert entry.user is None
    assert fingerprint(db) == before


# ---------------------------------------------------------------------- newer schema


def _newer(path: Path, version: int = 99) -> None:
    _trail(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


@pytest.mark.parametrize("args", READERS + WRITERS, ids=lambda a: a[0] + "-".join(a[1:2]))
def test_a_newer_trail_is_refused_by_every_command(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "trail.db"
    _newer(db)
    before = fingerprint(db)
    code, output = _invoke(args, db)
    assert code == 1
    assert f"{db} has schema version 99" in output
    assert f"reads up to {SCHEMA_VERSION}; upgrade finops_audit" in output
    assert fingerprint(db) == before


def test_a_newer_trail_is_refused_by_a_reading_service(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    _newer(db, SCHEMA_VERSION + 1)
    before = fingerprint(db)
    with AuditService(db, read_only=True) as reader:
        for ask in (reader.get_logs, reader.verify, reader.tool_stats, reader.count):
            with pytest.raises(AuditStorageError, match=f"schema version {SCHEMA_VERSION + 1}"):
                ask()
    assert fingerprint(db) == before


def test_a_newer_trail_is_never_written_and_tools_still_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's unusable-database path: logged, in stats and flush, counted at close."""
    db = tmp_path / "trail.db"
    _newer(db)
    before = fingerprint(db)[0]
    service = AuditService(db, close_timeout=0.5)

    @audit_tool_sync(name="lookup", service=service)
    def lookup(region: str) -> str:
        return region

    with caplog.at_level(logging.WARNING, logger="finops_audit"):
        assert lookup("eu-west-1") == "eu-west-1"  # the tool is unaffected
        with pytest.raises(AuditTimeoutError, match="schema version 99"):
            service.flush(timeout=0.5)
        assert "schema version 99" in (service.stats().last_error or "")
        with pytest.raises(AuditStorageError, match="schema version 99"):
            service.close()
    assert any("schema version 99" in r.getMessage() for r in caplog.records)
    assert fingerprint(db)[0] == before


@pytest.mark.parametrize("kind", ["other-app", "foreign-audit_logs", "not-sqlite"])
def test_the_writer_leaves_a_foreign_file_alone(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "app.db"
    FOREIGN[kind][0](db)
    before = fingerprint(db)[0]
    service = AuditService(db, close_timeout=0.5)

    @audit_tool_sync(name="lookup", service=service)
    def lookup(region: str) -> str:
        return region

    assert lookup("eu-west-1") == "eu-west-1"
    with pytest.raises(AuditTimeoutError):
        service.flush(timeout=0.5)
    assert "not a finops_audit trail" in (service.stats().last_error or "")
    with pytest.raises(AuditStorageError):
        service.close()
    assert fingerprint(db)[0] == before


def test_a_read_only_service_records_nothing(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    _trail(db, calls=2)
    before = fingerprint(db)
    reader = AuditService(db, read_only=True)
    assert reader.count() == 2
    with pytest.raises(AuditStorageError, match="read-only"):
        reader.purge("1d")
    reader.close()
    assert fingerprint(db) == before
    with (
        AuditService(tmp_path / "missing.db", read_only=True) as missing,
        pytest.raises(AuditStorageError, match="no audit database"),
    ):
        missing.count()
    assert not (tmp_path / "missing.db").exists()
