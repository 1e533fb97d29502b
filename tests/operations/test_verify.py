"""Tamper evidence: ``verify`` (library and CLI) finds the first row where the chain breaks.

Every tampering is done the way an intruder with file access would: plain
``sqlite3`` on the closed file.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from finops_audit import AuditService, audit_context, audit_tool_sync
from finops_audit.cli import main
from finops_audit.maintenance import VerifyReport

from ._util import CHAINED_COLUMNS, execute, no_traceback

KEY = "k" * 32


def make_trail(db_path: Path, rows: int = 10, **settings: object) -> None:
    """``rows`` chained entries; every third one fails; all with a user."""
    with AuditService(db_path, **settings) as service:

        @audit_tool_sync(name="scan", service=service)
        def scan(i: int) -> int:
            if i % 3 == 0:
                raise ValueError(f"bad account {i}")
            return i

        with audit_context(user="alice"):
            for i in range(1, rows + 1):
                try:
                    scan(i)
                except ValueError:
                    pass


def verify(db_path: Path, **settings: object) -> VerifyReport:
    with AuditService(db_path, **settings) as service:
        return service.verify()


def cli_verify(db_path: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env=env).invoke(main, ["verify", "--db", str(db_path)])
    no_traceback(result.output, result.stderr)
    return result.exit_code, result.stdout, result.stderr


def test_an_untouched_trail_verifies(db_path: Path) -> None:
    make_trail(db_path)
    report = verify(db_path)
    assert report == VerifyReport(ok=True, rows_checked=10)
    code, out, err = cli_verify(db_path)
    assert (code, out.splitlines()[0], err) == (0, "OK: 10 entries verified", "")
    assert "without AUDIT_HMAC_KEY anyone able to write the file" in out
    json_out = CliRunner().invoke(main, ["verify", "--db", str(db_path), "--json"])
    assert VerifyReport.model_validate_json(json_out.stdout) == report


def test_empty_trail_verifies(svc: AuditService) -> None:
    assert svc.verify() == VerifyReport(ok=True, rows_checked=0)


def _swap(a: int, b: int) -> list[str]:
    cols = ", ".join((*CHAINED_COLUMNS, "row_hash"))
    sets = ", ".join(
        f"{c} = (SELECT {c} FROM tmp WHERE id = {{other}})" for c in (*CHAINED_COLUMNS, "row_hash")
    )
    return [
        f"CREATE TEMP TABLE tmp AS SELECT id, {cols} FROM audit_logs WHERE id IN ({a}, {b})",
        f"UPDATE audit_logs SET {sets.format(other=b)} WHERE id = {a}",
        f"UPDATE audit_logs SET {sets.format(other=a)} WHERE id = {b}",
    ]


TAMPERING: dict[str, tuple[list[str], int]] = {
    "parameters": (["UPDATE audit_logs SET parameters = '{\"i\": 40}' WHERE id = 4"], 4),
    "error_message": (["UPDATE audit_logs SET error_message = 'oops' WHERE id = 6"], 6),
    "error_message-cleared": (["UPDATE audit_logs SET error_message = NULL WHERE id = 3"], 3),
    "status": (["UPDATE audit_logs SET status = 'SUCCESS' WHERE id = 3"], 3),
    "timestamp": (
        ["UPDATE audit_logs SET timestamp = '2020-01-01T00:00:00.000000+00:00' WHERE id = 4"],
        4,
    ),
    "tool_name": (["UPDATE audit_logs SET tool_name = 'harmless' WHERE id = 4"], 4),
    "execution_time_ms": (["UPDATE audit_logs SET execution_time_ms = 1.5 WHERE id = 2"], 2),
    "user": (["UPDATE audit_logs SET user = 'mallory' WHERE id = 5"], 5),
    "first-row": (["UPDATE audit_logs SET parameters = '{\"i\": 0}' WHERE id = 1"], 1),
    "last-row": (["UPDATE audit_logs SET parameters = '{\"i\": 0}' WHERE id = 10"], 10),
    "deleted-middle": (["DELETE FROM audit_logs WHERE id = 5"], 5),
    "deleted-range": (["DELETE FROM audit_logs WHERE id BETWEEN 4 AND 6"], 4),
    "deleted-first": (["DELETE FROM audit_logs WHERE id = 1"], 1),
    "deleted-last": (["DELETE FROM audit_logs WHERE id = 10"], 10),
    "deleted-last-two": (["DELETE FROM audit_logs WHERE id >= 9"], 9),
    "inserted-at-end": (
        [
            "INSERT INTO audit_logs (id, timestamp, tool_name, parameters, status, row_hash) "
            "SELECT 11, timestamp, tool_name, parameters, status, row_hash "
            "FROM audit_logs WHERE id = 10"
        ],
        11,
    ),
    "inserted-at-end-without-hash": (
        [
            "INSERT INTO audit_logs (id, timestamp, tool_name, parameters, status) "
            "VALUES (11, '2030-01-01T00:00:00.000000+00:00', 'scan', '{}', 'SUCCESS')"
        ],
        11,
    ),
    "reordered": (_swap(3, 6), 3),
    "reordered-neighbours": (_swap(7, 8), 7),
    "hash-nulled": (["UPDATE audit_logs SET row_hash = NULL WHERE id = 4"], 4),
    "last-hash-nulled": (["UPDATE audit_logs SET row_hash = NULL WHERE id = 10"], 10),
    "hash-replaced": (
        [
            "UPDATE audit_logs SET row_hash = (SELECT row_hash FROM audit_logs WHERE id = 2) "
            "WHERE id = 4"
        ],
        4,
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_reports_the_first_bad_row(db_path: Path, case: str) -> None:
    statements, first_bad = TAMPERING[case]
    make_trail(db_path)
    execute(db_path, *statements)
    report = verify(db_path)
    assert not report.ok
    assert report.first_bad_id == first_bad
    assert report.problem
    assert report.rows_checked < first_bad
    code, out, err = cli_verify(db_path)
    assert code == 1
    assert out == ""
    assert err.startswith(f"TAMPERED at id {first_bad}: ")


def chain_subkey(key: bytes) -> bytes:
    """The documented recipe: HKDF-SHA256 (RFC 5869), salt ``finops-audit``, the chain's label."""
    prk = hmac.new(b"finops-audit", key, hashlib.sha256).digest()
    return hmac.new(prk, b"finops-audit/v2/chain\x01", hashlib.sha256).digest()


def _recompute_chain(db_path: Path, key: bytes | None = None) -> None:
    """What an intruder does after editing: recompute every hash with the documented recipe."""
    import sqlite3

    if key is not None:
        key = chain_subkey(key)

    conn = sqlite3.connect(db_path)
    try:
        cols = ", ".join(CHAINED_COLUMNS)
        rows = conn.execute(f"SELECT id, {cols} FROM audit_logs ORDER BY id").fetchall()
        prev = "0" * 64
        with conn:
            for row in rows:
                data = orjson.dumps([*row, prev])
                if key is None:
                    prev = hashlib.sha256(data).hexdigest()
                else:
                    prev = hmac.new(key, data, hashlib.sha256).hexdigest()
                conn.execute("UPDATE audit_logs SET row_hash = ? WHERE id = ?", (prev, row[0]))
    finally:
        conn.close()


def test_recomputing_the_recipe_reproduces_an_unkeyed_chain(db_path: Path) -> None:
    # Shows the intruder model below is faithful: without a key, a recomputed
    # chain is indistinguishable (which is why a key matters).
    make_trail(db_path)
    execute(db_path, "UPDATE audit_logs SET parameters = '{\"i\": 0}' WHERE id = 4")
    _recompute_chain(db_path)
    assert verify(db_path).ok


def test_keyed_chain_verifies_with_the_key(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_HMAC_KEY", KEY)
    make_trail(db_path)
    report = verify(db_path)
    assert (report.ok, report.keyed, report.rows_checked) == (True, True, 10)
    code, out, _ = cli_verify(db_path)  # the CLI reads the same environment
    assert (code, out.splitlines()[0]) == (0, "OK: 10 entries verified (keyed)")
    assert "deleted newest entries show only with --anchors" in out
    # and with a wrong key (or none) it does not
    wrong = verify(db_path, hmac_key="x" * 32)
    assert (wrong.ok, wrong.first_bad_id) == (False, 1)
    monkeypatch.delenv("AUDIT_HMAC_KEY")
    unkeyed = verify(db_path)
    assert (unkeyed.ok, unkeyed.first_bad_id) == (False, 1)
    assert "AUDIT_HMAC_KEY" in (unkeyed.problem or "")


def test_keyed_chain_catches_an_intruder_who_recomputes_sha256(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    execute(db_path, "UPDATE audit_logs SET status = 'SUCCESS', error_message = NULL WHERE id = 6")
    _recompute_chain(db_path)  # unkeyed: the intruder has no key
    report = verify(db_path, hmac_key=KEY)
    assert (report.ok, report.first_bad_id, report.keyed) == (False, 1, True)
    code, _, err = cli_verify(db_path, env={"AUDIT_HMAC_KEY": KEY})
    assert code == 1
    assert err.startswith("TAMPERED at id 1")


def test_keyed_chain_with_the_key_recomputed_is_accepted(db_path: Path) -> None:
    # The converse, so the test above is meaningful: the recipe is the real one.
    make_trail(db_path, hmac_key=KEY)
    _recompute_chain(db_path, KEY.encode())
    assert verify(db_path, hmac_key=KEY).ok


@pytest.mark.parametrize("key", [None, KEY], ids=["unkeyed", "keyed"])
def test_nulling_every_hash_is_caught(db_path: Path, key: str | None) -> None:
    make_trail(db_path, hmac_key=key)
    execute(
        db_path,
        "UPDATE audit_logs SET row_hash = NULL",
        "UPDATE audit_logs SET status = 'SUCCESS', error_message = NULL WHERE id = 6",
    )
    report = verify(db_path, hmac_key=key)
    assert not report.ok
    assert report.first_bad_id == 1


def test_nulling_the_first_hash_is_reported_at_row_one(db_path: Path) -> None:
    make_trail(db_path)
    execute(db_path, "UPDATE audit_logs SET row_hash = NULL WHERE id = 1")
    report = verify(db_path)
    assert (report.ok, report.first_bad_id) == (False, 1)


def test_a_forged_purge_checkpoint_is_caught(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    # delete the oldest rows and forge a checkpoint without the key
    execute(
        db_path,
        "DELETE FROM audit_logs WHERE id <= 3",
        (
            "INSERT INTO audit_checkpoints (created_at, through_id, last_hash, rows_purged, "
            "signature) VALUES ('2026-01-01T00:00:00.000000+00:00', 3, "
            "(SELECT row_hash FROM audit_logs WHERE id = 4), 3, 'forged')",
            (),
        ),
    )
    report = verify(db_path, hmac_key=KEY)
    assert (report.ok, report.first_bad_id) == (False, 4)


def test_deleting_the_oldest_rows_without_a_checkpoint_is_caught(db_path: Path) -> None:
    make_trail(db_path)
    execute(db_path, "DELETE FROM audit_logs WHERE id <= 3")
    report = verify(db_path)
    assert not report.ok
    assert "rows 1..3 are missing" in (report.problem or "")


@pytest.mark.asyncio
async def test_averify(db_path: Path) -> None:
    make_trail(db_path)
    async with AuditService(db_path) as service:
        assert (await service.averify()).ok
    execute(db_path, "UPDATE audit_logs SET tool_name = 'x' WHERE id = 7")
    async with AuditService(db_path) as service:
        report = await service.averify()
    assert (report.ok, report.first_bad_id) == (False, 7)
