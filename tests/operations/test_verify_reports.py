"""The whole report ``verify`` gives when it fails, after purges and on trails older than the chain.

Why: ``finops-audit verify --json`` hands every field to monitoring, and an
operator acts on them: which row, how many were checked, whether the check
was keyed, where the purged part ends, how many rows predate the chain. Each
case compares the complete report, so no field can drift unnoticed. Attacks
are made with plain ``sqlite3`` on the closed file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from finops_audit import AuditService
from finops_audit._chain import GENESIS, Chainer
from finops_audit.maintenance import VerifyReport
from finops_audit.storage import _sqlite_maintenance as maintenance_sql

from ._util import execute
from .test_legacy_schema import _seed
from .test_tamper import KEY, verify
from .test_verify import make_trail


def purge_through(db_path: Path, through: int, batch: int, key: str | None = KEY) -> None:
    chainer = Chainer(key.encode() if key else None)
    asyncio.run(maintenance_sql.purge(db_path, 5000, chainer, "9999", batch=batch, max_id=through))


def test_a_checkpoint_that_does_not_match_its_signature_fails_before_any_row(
    db_path: Path,
) -> None:
    make_trail(db_path, hmac_key=KEY)
    purge_through(db_path, 6, batch=3)
    execute(db_path, "UPDATE audit_checkpoints SET rows_purged = 2 WHERE through_id = 3")
    assert verify(db_path) == VerifyReport(
        ok=False,
        rows_checked=0,
        first_bad_id=4,
        keyed=True,
        problem="the purge checkpoint #1 through id 3 does not match its signature",
    )


def test_an_edit_after_a_purge_is_reported_with_where_the_purge_ended(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    purge_through(db_path, 4, batch=4)
    execute(db_path, "UPDATE audit_logs SET tool_name = 'harmless' WHERE id = 7")
    assert verify(db_path) == VerifyReport(
        ok=False,
        rows_checked=2,
        first_bad_id=7,
        checkpoint_through_id=4,
        keyed=True,
        problem="row 7 does not match its hash: it was modified, inserted or moved",
    )


def test_rows_deleted_after_a_purge_are_reported_with_where_the_purge_ended(
    db_path: Path,
) -> None:
    make_trail(db_path, hmac_key=KEY)
    purge_through(db_path, 4, batch=4)
    execute(db_path, "DELETE FROM audit_logs WHERE id = 8")
    assert verify(db_path) == VerifyReport(
        ok=False,
        rows_checked=3,
        first_bad_id=8,
        checkpoint_through_id=4,
        keyed=True,
        problem="rows 8..8 are missing (deleted)",
    )


def test_an_edit_in_a_trail_older_than_the_chain_counts_its_pre_chain_rows(
    db_path: Path,
) -> None:
    _seed(db_path)  # rows 1..5 from before the chain
    make_trail(db_path, rows=3, hmac_key=KEY)
    execute(db_path, "UPDATE audit_logs SET tool_name = 'harmless' WHERE id = 7")
    assert verify(db_path) == VerifyReport(
        ok=False,
        rows_checked=6,
        legacy_rows=5,
        first_bad_id=7,
        keyed=True,
        problem="row 7 does not match its hash: it was modified, inserted or moved",
    )


def test_a_pre_chain_trail_purged_partway_through_its_old_rows_still_verifies(
    db_path: Path,
) -> None:
    _seed(db_path)
    make_trail(db_path, rows=3, hmac_key=KEY)
    purge_through(db_path, 3, batch=2)  # old rows only: their checkpoints carry no hash
    assert verify(db_path) == VerifyReport(
        ok=True, rows_checked=5, legacy_rows=2, checkpoint_through_id=3, keyed=True
    )
    purge_through(db_path, 6, batch=5)  # now through the first chained row
    assert verify(db_path) == VerifyReport(
        ok=True, rows_checked=2, checkpoint_through_id=6, keyed=True
    )


def test_a_checkpoint_claiming_a_chain_before_pre_chain_rows_is_caught(db_path: Path) -> None:
    # Without a key anyone can sign a checkpoint; one that says rows 1..2 were
    # chained contradicts rows 3..5 having no hash.
    _seed(db_path)
    make_trail(db_path, rows=3, hmac_key=None)
    execute(db_path, "DELETE FROM audit_logs WHERE id <= 2")
    forged_hash = "f" * 64
    assert forged_hash != GENESIS
    stamp = "2026-01-01T00:00:00.000000+00:00"
    signature = Chainer(None).checkpoint_signature(2, forged_hash, 2, stamp)
    execute(
        db_path,
        (
            "INSERT INTO audit_checkpoints (created_at, through_id, last_hash, rows_purged, "
            "signature) VALUES (?, 2, ?, 2, ?)",
            (stamp, forged_hash, signature),
        ),
    )
    report = verify(db_path, None)
    assert (report.ok, report.first_bad_id, report.checkpoint_through_id) == (False, 3, 2)
    assert report.problem == "row 3 has no hash inside the chain (its hash was removed)"


def test_a_failing_first_chained_row_names_the_key_as_a_possible_cause(db_path: Path) -> None:
    # the first chained row failing is also what a wrong key looks like
    make_trail(db_path, hmac_key=KEY)
    execute(db_path, "UPDATE audit_logs SET tool_name = 'harmless' WHERE id = 1")
    assert verify(db_path) == VerifyReport(
        ok=False,
        rows_checked=0,
        first_bad_id=1,
        keyed=True,
        problem="row 1 does not match its hash: it was modified, inserted or moved "
        "(or the key is wrong: check AUDIT_HMAC_KEY)",
    )


def test_the_first_chained_row_after_pre_chain_rows_names_the_key_too(db_path: Path) -> None:
    _seed(db_path)
    make_trail(db_path, rows=2, hmac_key=KEY)
    execute(db_path, "UPDATE audit_logs SET tool_name = 'harmless' WHERE id = 6")
    report = verify(db_path)
    assert (report.first_bad_id, report.rows_checked, report.legacy_rows) == (6, 5, 5)
    assert report.problem == (
        "row 6 does not match its hash: it was modified, inserted or moved "
        "(or the key is wrong: check AUDIT_HMAC_KEY)"
    )


def test_deleting_the_only_row_is_caught(db_path: Path) -> None:
    make_trail(db_path, rows=1, hmac_key=KEY)
    execute(db_path, "DELETE FROM audit_logs")
    assert verify(db_path) == VerifyReport(
        ok=False,
        rows_checked=0,
        first_bad_id=1,
        keyed=True,
        problem="rows 1..1 were deleted from the end of the trail",
    )


def test_deleting_every_row_is_caught_by_the_sequence(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    execute(db_path, "DELETE FROM audit_logs")
    report = verify(db_path)
    assert (report.ok, report.first_bad_id) == (False, 1)
    assert report.problem == "rows 1..10 were deleted from the end of the trail"


def test_rows_deleted_from_the_end_after_a_purge_are_reported_with_the_purge(
    db_path: Path,
) -> None:
    make_trail(db_path, hmac_key=KEY)
    purge_through(db_path, 4, batch=4)
    execute(db_path, "DELETE FROM audit_logs WHERE id >= 9")
    assert verify(db_path) == VerifyReport(
        ok=False,
        rows_checked=4,
        first_bad_id=9,
        checkpoint_through_id=4,
        keyed=True,
        problem="rows 9..10 were deleted from the end of the trail",
    )


def test_an_anchor_broken_after_a_purge_is_reported_with_the_purge(
    db_path: Path, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    make_trail(db_path, hmac_key=KEY, anchor_path=anchors)
    purge_through(db_path, 4, batch=4)
    execute(
        db_path,
        "DELETE FROM audit_logs WHERE id > 7",
        "UPDATE sqlite_sequence SET seq = 7 WHERE name = 'audit_logs'",
    )
    with AuditService(db_path, hmac_key=KEY) as service:
        report = service.verify(anchors=anchors)
    assert (report.ok, report.first_bad_id, report.checkpoint_through_id) == (False, 8, 4)
    assert (report.rows_checked, report.keyed) == (3, True)


def test_a_trail_longer_than_one_read_is_verified_to_its_end(db_path: Path) -> None:
    rows = 5_000 + 40  # the walk reads 5,000 rows at a time
    make_trail(db_path, rows=rows, hmac_key=KEY)
    assert verify(db_path) == VerifyReport(ok=True, rows_checked=rows, keyed=True)
    execute(db_path, "UPDATE audit_logs SET tool_name = 'harmless' WHERE id = 5020")
    report = verify(db_path)
    assert (report.ok, report.first_bad_id, report.rows_checked) == (False, 5020, 5019)
