"""The signed ``audit_meta`` records: what verify says about each, and what the writer logs.

Why: ``test_tamper`` shows each tampering of a meta row fails verify; these
pin *what the operator is told*: the complete report (so monitoring reading
``--json`` sees the same), the exact problem (naming ``AUDIT_HMAC_KEY`` where a
wrong key is a possible cause), values no genuine record holds (NULL, bytes),
and the one-time warnings the writer logs when it marks an old trail or finds
its ``audit_meta`` gone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from finops_audit import AuditService
from finops_audit.maintenance import VerifyReport

from ._util import execute
from .test_legacy_schema import _seed
from .test_tamper import KEY, verify
from .test_verify import make_trail

ALTERED = (
    "the trail's signed {what} does not match: the key is wrong "
    "(check AUDIT_HMAC_KEY) or the record was altered"
)


def failed(problem: str, keyed: bool = True) -> VerifyReport:
    return VerifyReport(ok=False, rows_checked=0, first_bad_id=1, keyed=keyed, problem=problem)


@pytest.mark.parametrize(
    "value", ["X'30'", "1.5", "'٣'"], ids=["bytes", "fraction", "arabic-digit"]
)
def test_a_marker_no_genuine_trail_holds_is_a_failure_not_a_crash(
    db_path: Path, value: str
) -> None:
    make_trail(db_path, hmac_key=KEY)
    execute(db_path, f"UPDATE audit_meta SET value = {value} WHERE key = 'legacy_through'")
    assert verify(db_path) == failed(ALTERED.format(what="pre-chain marker"))


def test_a_changed_scheme_record_is_named(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    execute(db_path, "UPDATE audit_meta SET value = '3' WHERE key = 'scheme'")
    assert verify(db_path) == failed(ALTERED.format(what="key scheme record"))


def test_the_wrong_key_is_named_as_a_cause(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    other = "another-key-of-enough-length-0123456789"
    assert verify(db_path, other) == failed(ALTERED.format(what="key scheme record"))


def test_a_deleted_marker_is_named(db_path: Path) -> None:
    make_trail(db_path, hmac_key=None)
    execute(db_path, "DELETE FROM audit_meta WHERE key = 'legacy_through'")
    assert verify(db_path, None) == failed(MISSING, keyed=False)


MISSING = (
    "the trail's signed pre-chain marker (audit_meta 'legacy_through') is missing: it was deleted"
)


def test_a_dropped_meta_table_is_named_by_a_reader(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    execute(db_path, "DROP TABLE audit_meta")
    with AuditService(db_path, hmac_key=KEY, read_only=True) as reader:
        report = reader.verify()
    assert report == failed("the trail's audit_meta table was removed")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_marking_an_old_trail_is_logged_once(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    _seed(db_path)  # rows 1..5 from before the chain
    make_trail(db_path, rows=1, hmac_key=KEY)
    marked = (
        f"audit database {db_path}: rows 1..5 were written before the hash chain; they are "
        "recorded (signed) as such, once"
    )
    assert marked in _warnings(caplog)
    caplog.clear()
    make_trail(db_path, rows=1, hmac_key=KEY)
    assert not [m for m in _warnings(caplog) if "before the hash chain" in m]


def test_a_new_trail_logs_no_pre_chain_rows(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    make_trail(db_path, rows=2, hmac_key=KEY)
    assert not [m for m in _warnings(caplog) if "before the hash chain" in m]


def test_a_writer_finding_audit_meta_gone_says_so_and_never_re_signs_it(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_trail(db_path, hmac_key=KEY)
    execute(db_path, "DROP TABLE audit_meta")
    caplog.set_level(logging.WARNING, logger="finops_audit")
    make_trail(db_path, rows=1, hmac_key=KEY)
    assert (
        f"audit database {db_path} has lost its audit_meta table (it was removed); its signed "
        "records are never re-created, and `finops-audit verify` reports the trail as tampered"
    ) in _warnings(caplog)
    # the table is back (empty, from the schema), its signed records are not
    assert verify(db_path) == failed(MISSING)


def test_reopening_a_healthy_trail_warns_of_nothing(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_trail(db_path, rows=2, hmac_key=KEY)
    caplog.set_level(logging.WARNING, logger="finops_audit")
    make_trail(db_path, rows=2, hmac_key=KEY)
    assert not [m for m in _warnings(caplog) if "audit_meta" in m or "hash chain" in m]
    assert verify(db_path).rows_checked == 4
