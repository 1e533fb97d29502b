"""Central tamper evidence end to end: a keyed service forwards, an intruder deletes
a replica's newest rows in PostgreSQL, and ``finops-audit verify`` fails (issue 10)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from finops_audit import AuditConfigError, AuditService, audit_tool_sync
from finops_audit.cli import main

KEY = "central-tamper-key-0123456789abcdef-01"


def test_deleting_a_replicas_newest_rows_centrally_fails_verify(
    tmp_path: Path, pg_url: str
) -> None:
    buffer = tmp_path / "buf.db"
    with AuditService(db_path=buffer, db_url=pg_url, hmac_key=KEY, replica_id="r1") as svc:

        @audit_tool_sync(service=svc)
        def pay(to: str) -> str:
            return to

        for i in range(12):
            pay(f"acct-{i}")
        svc.forward(timeout=30)
        assert svc.verify().ok
    runner = CliRunner(env={"AUDIT_DB_URL": pg_url, "AUDIT_HMAC_KEY": KEY})
    result = runner.invoke(main, ["verify"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM audit_logs WHERE seq > 7")
    result = runner.invoke(main, ["verify"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "replica 'r1': its newest rows were deleted: seq 8..12" in result.stderr
    # the buffer itself is intact and still verifies
    with AuditService(db_path=buffer, hmac_key=KEY) as local:
        assert local.verify().ok


def test_an_anchor_file_is_for_a_sqlite_trail(tmp_path: Path, pg_url: str) -> None:
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text("")
    with (
        AuditService(db_path=tmp_path / "buf.db", db_url=pg_url, hmac_key=KEY) as svc,
        pytest.raises(AuditConfigError, match="anchor file checks one SQLite trail"),
    ):
        svc.verify(anchors=anchors)
