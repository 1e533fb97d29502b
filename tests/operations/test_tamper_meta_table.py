"""The signed ``audit_meta`` table itself removed, or its marker re-signed without a key.

Why: ``test_tamper`` attacks each signed meta *row*; these attack the table and
the marker's *shape*. A trail whose schema always had ``audit_meta`` and no
longer has it is tampered (it is never taken for a trail older than the table),
and a pre-chain marker that is not a row id is a verify failure, never a crash,
even when an intruder re-signed it (anyone can sign without a key).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from finops_audit._chain import Chainer
from finops_audit.cli import main

from ._util import execute
from .test_tamper import KEY, verify
from .test_verify import make_trail


def _user_version(db_path: Path) -> int:
    conn = sqlite3.connect(db_path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("key", [KEY, None], ids=["keyed", "unkeyed"])
def test_a_dropped_audit_meta_table_fails_a_read_only_verify(
    db_path: Path, key: str | None
) -> None:
    make_trail(db_path, hmac_key=key)
    assert _user_version(db_path) >= 4  # a schema that always has audit_meta
    execute(db_path, "DROP TABLE audit_meta")
    before = hashlib.sha256(db_path.read_bytes()).hexdigest()
    result = CliRunner(env={"AUDIT_HMAC_KEY": key} if key else None).invoke(
        main, ["verify", "--db", str(db_path)]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("TAMPERED at id 1: ")
    assert "audit_meta table was removed" in result.stderr
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == before


@pytest.mark.parametrize(
    "value", ["x", "-1", "", " 3"], ids=["letter", "negative", "empty", "space"]
)
def test_a_re_signed_marker_that_is_not_a_row_id_fails_verify(db_path: Path, value: str) -> None:
    make_trail(db_path)  # unkeyed: anyone can compute a valid signature
    forged = Chainer(None).meta_signature("legacy_through", value)
    execute(
        db_path,
        f"UPDATE audit_meta SET value = '{value}', signature = '{forged}' "
        "WHERE key = 'legacy_through'",
    )
    report = verify(db_path, None)
    assert (report.ok, report.first_bad_id, report.rows_checked) == (False, 1, 0)
    assert report.problem
    assert "pre-chain marker" in report.problem
