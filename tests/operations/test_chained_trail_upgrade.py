"""A trail from the versions that chained rows but had no ``audit_meta`` upgrades in place.

Why: between the hash chain and the signed meta, trails were written with a
``row_hash`` column, hashes made with the raw key (key scheme 1), some rows
perhaps older than the chain, and no ``audit_meta`` table. The first open of
such a file by a writer must record, once and signed under scheme 1, where the
chain starts, and the trail must go on verifying and growing under scheme 1.
The file is built here byte for byte as those versions left it (plain
``sqlite3``), then opened in process by the real service.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from finops_audit import AuditService, audit_tool_sync
from finops_audit._chain import GENESIS, Chainer
from finops_audit.maintenance import VerifyReport

from ._util import at, execute, stamp

KEY = "chained-upgrade-key-0123456789abcdef"
SCHEME1 = Chainer(KEY.encode(), scheme=1)

OLD_SCHEMA = """
CREATE TABLE audit_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    parameters TEXT NOT NULL,
    status TEXT NOT NULL,
    error_message TEXT,
    execution_time_ms REAL,
    row_hash TEXT
);
CREATE INDEX idx_audit_timestamp ON audit_logs(timestamp);
PRAGMA user_version = 2;
"""


def old_trail(path: Path, legacy: int, chained: int, chainer: Chainer | None = SCHEME1) -> None:
    """``legacy`` rows without a hash, then ``chained`` rows hashed by ``chainer``."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(OLD_SCHEMA)
        prev = GENESIS
        with conn:
            for i in range(1, legacy + chained + 1):
                values = (
                    stamp(at(i) - timedelta(days=3)),
                    "scan",
                    orjson.dumps({"i": i}).decode(),
                    "SUCCESS",
                    None,
                    1.5,
                )
                row_hash = None
                if i > legacy and chainer is not None:
                    row_hash = chainer.row_hash(i, (*values, *(None,) * 9), prev)
                    prev = row_hash
                conn.execute(
                    "INSERT INTO audit_logs (id, timestamp, tool_name, parameters, status, "
                    "error_message, execution_time_ms, row_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (i, *values, row_hash),
                )
    finally:
        conn.close()


def meta(path: Path) -> dict[str, tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT key, value, signature FROM audit_meta").fetchall()
    finally:
        conn.close()
    return {key: (value, signature) for key, value, signature in rows}


def write_calls(path: Path, calls: int, key: str | None = KEY) -> None:
    with AuditService(path, hmac_key=key) as service:

        @audit_tool_sync(name="scan", service=service)
        def scan(i: int) -> int:
            return i

        for i in range(calls):
            scan(100 + i)


def verify(path: Path, key: str | None = KEY) -> VerifyReport:
    with AuditService(path, hmac_key=key) as service:
        return service.verify()


def test_a_chained_trail_without_meta_is_marked_once_under_the_old_scheme(db_path: Path) -> None:
    old_trail(db_path, legacy=3, chained=4)
    write_calls(db_path, 2)
    # the chain starts at row 4: rows 1..3 recorded as pre-chain, signed with the raw key
    assert meta(db_path) == {"legacy_through": ("3", SCHEME1.meta_signature("legacy_through", "3"))}
    report = verify(db_path)
    assert report == VerifyReport(ok=True, rows_checked=9, legacy_rows=3, keyed=True)
    # a later writer session changes nothing in the meta and extends the same chain
    before = meta(db_path)
    write_calls(db_path, 1)
    assert meta(db_path) == before
    assert verify(db_path).rows_checked == 10


def test_the_upgraded_trail_is_not_taken_for_the_new_scheme(db_path: Path) -> None:
    # the old rows were signed with the raw key; a scheme-2 reading would fail them
    old_trail(db_path, legacy=0, chained=3)
    write_calls(db_path, 1)
    assert "scheme" not in meta(db_path)
    assert verify(db_path).ok
    assert not verify(db_path, "another-key-of-enough-length-0123456789").ok


def test_a_fully_chained_old_trail_has_no_pre_chain_rows(db_path: Path) -> None:
    old_trail(db_path, legacy=0, chained=5)
    write_calls(db_path, 1)
    assert meta(db_path)["legacy_through"][0] == "0"
    assert verify(db_path) == VerifyReport(ok=True, rows_checked=6, keyed=True)
    # so the first row's hash cannot be dropped to pass it off as pre-chain
    execute(db_path, "UPDATE audit_logs SET row_hash = NULL WHERE id = 1")
    report = verify(db_path)
    assert (report.ok, report.first_bad_id) == (False, 1)


@pytest.mark.parametrize("legacy", [2, 4])
def test_only_the_rows_before_the_chain_may_lack_a_hash(db_path: Path, legacy: int) -> None:
    old_trail(db_path, legacy=legacy, chained=3)
    write_calls(db_path, 1)
    assert meta(db_path)["legacy_through"][0] == str(legacy)
    execute(db_path, f"UPDATE audit_logs SET row_hash = NULL WHERE id = {legacy + 1}")
    report = verify(db_path)
    assert (report.ok, report.first_bad_id) == (False, legacy + 1)
    assert "has no hash inside the chain" in (report.problem or "")


def test_a_column_added_but_never_filled_marks_every_old_row_pre_chain(db_path: Path) -> None:
    # a trail written with the chain switched off: a row_hash column, no hash in it
    old_trail(db_path, legacy=4, chained=0, chainer=None)
    write_calls(db_path, 2)
    assert meta(db_path)["legacy_through"][0] == "4"
    report = verify(db_path)
    assert (report.ok, report.legacy_rows, report.rows_checked) == (True, 4, 6)


def test_an_old_chained_trail_verifies_read_only_before_any_upgrade(db_path: Path) -> None:
    old_trail(db_path, legacy=2, chained=3)
    with AuditService(db_path, hmac_key=KEY, read_only=True) as reader:
        report = reader.verify()
    assert report == VerifyReport(ok=True, rows_checked=5, legacy_rows=2, keyed=True)
    other_key = "another-key-of-enough-length-0123456789"
    with AuditService(db_path, hmac_key=other_key, read_only=True) as reader:
        assert not reader.verify().ok
    conn = sqlite3.connect(db_path)
    try:
        # nothing was written by the readers: still no audit_meta, still version 2
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'audit_meta'"
        ).fetchone() == (0,)
    finally:
        conn.close()


def test_a_hash_removed_inside_an_old_chain_is_caught_read_only(db_path: Path) -> None:
    # before any upgrade there is no signed marker: the chain itself must hold
    old_trail(db_path, legacy=2, chained=4)
    execute(db_path, "UPDATE audit_logs SET row_hash = NULL WHERE id = 4")
    with AuditService(db_path, hmac_key=KEY, read_only=True) as reader:
        report = reader.verify()
    assert (report.ok, report.first_bad_id) == (False, 4)
    assert report.problem == "row 4 has no hash inside the chain (its hash was removed)"
