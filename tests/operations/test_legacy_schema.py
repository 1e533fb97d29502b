"""A trail created by the design note's original code upgrades in place."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from click.testing import CliRunner

from finops_audit import AuditService, AuditStatus, audit_context, audit_tool_sync
from finops_audit.cli import main
from tests.helpers import disk_rows

SEED_SCHEMA = """
CREATE TABLE audit_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    parameters TEXT NOT NULL,
    status TEXT NOT NULL,
    error_message TEXT,
    execution_time_ms REAL
);
CREATE INDEX idx_audit_timestamp ON audit_logs(timestamp);
"""

SEED_ROWS = [
    ("check_tag_compliance", {"resource_types": ["ec2", "s3"]}, "SUCCESS", None, 12.5),
    ("get_cost_report", {"month": "2025-05", "granularity": "DAILY"}, "SUCCESS", None, 230.0),
    ("get_cost_report", {"month": "bogus"}, "FAILURE", "ValueError: bad month", 1.25),
    ("list_idle_resources", {}, "SUCCESS", None, 88.0),
    ("check_tag_compliance", {"resource_types": []}, "FAILURE", "KeyError: 'tags'", 0.5),
]


def _seed(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        conn.executescript(SEED_SCHEMA)
        with conn:
            for tool, params, status, error, ms in SEED_ROWS:
                conn.execute(
                    "INSERT INTO audit_logs (timestamp, tool_name, parameters, status, "
                    "error_message, execution_time_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        datetime.now(timezone.utc).isoformat(),
                        tool,
                        json.dumps(params),
                        status,
                        error,
                        ms,
                    ),
                )
    finally:
        conn.close()


def test_seed_trail_upgrades_in_place(db_path: Path) -> None:
    _seed(db_path)
    with AuditService(db_path) as service:
        old = list(service.iter_logs())
        assert [
            (e.tool_name, e.parameters, e.status, e.error_message, e.execution_time_ms) for e in old
        ] == [
            (tool, params, AuditStatus(status), error, ms)
            for tool, params, status, error, ms in SEED_ROWS
        ]
        assert all(e.timestamp.tzinfo is not None for e in old)
        assert all(e.user is None for e in old)
        assert len(service.get_logs(status="FAILURE")) == 2

        @audit_tool_sync(name="get_cost_report", service=service)
        def get_cost_report(month: str) -> str:
            return month

        with audit_context(user="bob", client_name="claude-desktop"):
            get_cost_report("2025-06")
        newest = service.get_logs(limit=1)[0]
        assert (newest.id, newest.user, newest.client_name) == (6, "bob", "claude-desktop")
        assert [e.id for e in service.get_logs(user="bob")] == [6]
        report = service.verify()
        assert (report.ok, report.legacy_rows, report.rows_checked) == (True, 5, 6)
        [stats] = service.tool_stats(tool_name="get_cost_report")
        assert (stats.calls, stats.failures) == (3, 1)
    rows = disk_rows(db_path)
    assert [r["row_hash"] is None for r in rows] == [True] * 5 + [False]
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    finally:
        conn.close()
    result = CliRunner().invoke(main, ["verify", "--db", str(db_path)])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "OK: 6 entries verified, 5 from before the chain"


def test_editing_a_chained_row_after_the_upgrade_is_caught(db_path: Path) -> None:
    # Legacy rows carry no hash; the rows written after the upgrade are chained.
    _seed(db_path)
    with AuditService(db_path) as service:

        @audit_tool_sync(service=service)
        def ping(i: int) -> int:
            return i

        ping(1)
        ping(2)
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.execute("UPDATE audit_logs SET parameters = '{\"i\": 9}' WHERE id = 6")
    finally:
        conn.close()
    with AuditService(db_path) as service:
        report = service.verify()
    assert (report.ok, report.first_bad_id) == (False, 6)
