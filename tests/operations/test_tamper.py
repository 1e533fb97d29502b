"""Tamper evidence that does not trust the file (issue 10, section 1).

Every attack is made the way an intruder with write access to the file makes
it: plain ``sqlite3`` on the closed file, then the real ``verify`` (library
and the CLI in a real process). The signed records verify relies on
(``audit_meta``'s key scheme and pre-chain marker, every purge checkpoint)
are each deleted, changed, swapped and forged with another row's signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from finops_audit import AuditConfigError, AuditService, audit_tool_sync
from finops_audit._chain import Chainer, hkdf_sha256, pseudonym_key
from finops_audit.cli import main
from finops_audit.maintenance import VerifyReport
from finops_audit.storage import _sqlite_maintenance as maintenance_sql
from tests.helpers import disk_rows

from ._util import cli_env, execute, run_cli
from .test_legacy_schema import _seed
from .test_verify import make_trail

KEY = "tamper-test-key-0123456789abcdef-0123"
DATA = Path(__file__).parent / "data"
#: Made by the code before the key schemes (scheme 1: the raw key signs everything):
#: 12 calls of "scan" under ``FIXTURE_KEY``, rows 1..5 purged (one signed checkpoint).
FIXTURE = DATA / "scheme1_keyed.db"
FIXTURE_KEY = "scheme-one-fixture-key-0123456789abcdef"


def verify(db_path: Path, key: str | None = KEY) -> VerifyReport:
    with AuditService(db_path, hmac_key=key) as service:
        return service.verify()


def meta(db_path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT key, value, signature FROM audit_meta ORDER BY key").fetchall()
    finally:
        conn.close()


def checkpoints(db_path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT * FROM audit_checkpoints ORDER BY id").fetchall()
    finally:
        conn.close()


def purge_through(db_path: Path, through: int, batch: int, key: str | None = KEY) -> None:
    """The library's own purge of rows 1..through in batches (one signed checkpoint each)."""
    chainer = Chainer(key.encode() if key else None)
    asyncio.run(maintenance_sql.purge(db_path, 5000, chainer, "9999", batch=batch, max_id=through))


# ------------------------------------------------------------------ the issue's reproduction


def _downgrade(db_path: Path) -> None:
    execute(
        db_path,
        "DELETE FROM audit_meta",
        "UPDATE audit_logs SET row_hash = NULL",
        'UPDATE audit_logs SET parameters = \'{"to":"attacker"}\' WHERE id = 5',
    )


def test_the_issues_downgrade_fails_verify_in_a_real_cli_process(
    db_path: Path, tmp_path: Path
) -> None:
    make_trail(db_path, hmac_key=KEY)
    _downgrade(db_path)
    done = run_cli("verify", "--db", str(db_path), cwd=tmp_path, env=cli_env(AUDIT_HMAC_KEY=KEY))
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    assert done.stderr.startswith("TAMPERED at id 1: ")
    assert "pre-chain marker" in done.stderr
    assert "missing" in done.stderr
    # the open did not re-create (nor sign) the marker, and a second run agrees
    assert meta(db_path) == []
    again = run_cli("verify", "--db", str(db_path), cwd=tmp_path, env=cli_env(AUDIT_HMAC_KEY=KEY))
    assert again.returncode == 1


def test_the_issues_downgrade_fails_verify_through_the_service(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    _downgrade(db_path)
    report = verify(db_path)
    assert (report.ok, report.first_bad_id, report.keyed) == (False, 1, True)
    assert "pre-chain marker" in (report.problem or "")


def test_a_writer_opening_a_downgraded_trail_does_not_re_sign_it(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    _downgrade(db_path)
    with AuditService(db_path, hmac_key=KEY) as service:

        @audit_tool_sync(service=service)
        def ping() -> None:
            return None

        ping()  # the writer opens (and prepares) the file
        service.flush()
        assert meta(db_path) == []
        assert not service.verify().ok
    assert meta(db_path) == []
    assert not verify(db_path).ok


def test_dropping_audit_meta_is_a_verify_failure_never_a_fresh_start(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    execute(db_path, "DROP TABLE audit_meta", "UPDATE audit_logs SET row_hash = NULL")
    with AuditService(db_path, hmac_key=KEY) as service:

        @audit_tool_sync(service=service)
        def ping() -> None:
            return None

        ping()
    assert meta(db_path) == []  # the table is back, empty: nothing was signed
    report = verify(db_path)
    assert (report.ok, report.first_bad_id) == (False, 1)


# ------------------------------------------------------------------ every signed meta row


def _meta_sig(db_path: Path, key: str) -> str:
    return meta_row(db_path, key)[2]


def meta_row(db_path: Path, key: str) -> tuple[str, str, str]:
    return next(row for row in meta(db_path) if row[0] == key)


META_TAMPERING: dict[str, list[str]] = {
    "marker-deleted": ["DELETE FROM audit_meta WHERE key = 'legacy_through'"],
    "marker-raised": ["UPDATE audit_meta SET value = '10' WHERE key = 'legacy_through'"],
    "marker-unsigned": ["UPDATE audit_meta SET signature = '' WHERE key = 'legacy_through'"],
    "marker-with-scheme-signature": [
        "UPDATE audit_meta SET signature = (SELECT signature FROM audit_meta "
        "WHERE key = 'scheme') WHERE key = 'legacy_through'"
    ],
    "scheme-deleted": ["DELETE FROM audit_meta WHERE key = 'scheme'"],
    "scheme-lowered": ["UPDATE audit_meta SET value = '1' WHERE key = 'scheme'"],
    "scheme-unsigned": ["UPDATE audit_meta SET signature = '' WHERE key = 'scheme'"],
    "scheme-with-marker-signature": [
        "UPDATE audit_meta SET signature = (SELECT signature FROM audit_meta "
        "WHERE key = 'legacy_through') WHERE key = 'scheme'"
    ],
    "swapped-values": [
        "UPDATE audit_meta SET value = CASE key WHEN 'scheme' THEN '0' ELSE '2' END "
        "WHERE key IN ('scheme', 'legacy_through')"
    ],
    "swapped-signatures": [
        "CREATE TEMP TABLE s AS SELECT key, signature FROM audit_meta",
        "UPDATE audit_meta SET signature = (SELECT signature FROM s WHERE s.key = "
        "CASE audit_meta.key WHEN 'scheme' THEN 'legacy_through' ELSE 'scheme' END) "
        "WHERE key IN ('scheme', 'legacy_through')",
    ],
}


@pytest.mark.parametrize("key", [KEY, None], ids=["keyed", "unkeyed"])
@pytest.mark.parametrize("case", sorted(META_TAMPERING))
def test_each_signed_meta_row_is_checked(db_path: Path, case: str, key: str | None) -> None:
    make_trail(db_path, hmac_key=key)
    assert {row[0] for row in meta(db_path)} == {"legacy_through", "scheme"}
    execute(db_path, *META_TAMPERING[case])
    report = verify(db_path, key)
    assert (report.ok, report.first_bad_id, report.rows_checked) == (False, 1, 0)
    assert report.problem
    code = CliRunner(env={"AUDIT_HMAC_KEY": key} if key else None).invoke(
        main, ["verify", "--db", str(db_path)]
    )
    assert code.exit_code == 1
    assert code.stderr.startswith("TAMPERED at id 1: ")


def test_nulling_hashes_after_a_raised_marker_is_caught_with_the_key(db_path: Path) -> None:
    # An intruder without the key cannot move the marker over the rows they edit.
    make_trail(db_path, hmac_key=KEY)
    forged = Chainer(None).meta_signature("legacy_through", "10")
    execute(
        db_path,
        (
            "UPDATE audit_meta SET value = '10', signature = ? WHERE key = 'legacy_through'",
            (forged,),
        ),
        "UPDATE audit_logs SET row_hash = NULL",
    )
    assert not verify(db_path).ok


def test_opening_a_chained_trail_never_rewrites_its_meta(db_path: Path) -> None:
    make_trail(db_path, hmac_key=KEY)
    before = meta(db_path)
    make_trail(db_path, hmac_key=KEY)  # a second writer session on the same file
    assert meta(db_path) == before
    assert verify(db_path).rows_checked == 20


# ------------------------------------------------------------------ a trail older than the chain


def test_a_pre_chain_trail_is_marked_once_signed_then_never_again(db_path: Path) -> None:
    _seed(db_path)  # the design note's schema: no hashes, no audit_meta
    make_trail(db_path, rows=3, hmac_key=KEY)
    marker = meta_row(db_path, "legacy_through")
    assert marker[1] == "5"
    assert meta_row(db_path, "scheme")[1] == "2"
    chain = Chainer(KEY.encode())
    assert marker[2] == chain.meta_signature("legacy_through", "5")
    report = verify(db_path)
    assert (report.ok, report.legacy_rows, report.rows_checked) == (True, 5, 8)
    # reopening changes nothing; nulling a chained row's hash is caught
    make_trail(db_path, rows=1, hmac_key=KEY)
    assert meta_row(db_path, "legacy_through") == marker
    execute(db_path, "UPDATE audit_logs SET row_hash = NULL WHERE id >= 6")
    report = verify(db_path)
    assert (report.ok, report.first_bad_id) == (False, 6)


def test_a_new_trail_is_marked_at_creation(db_path: Path) -> None:
    with AuditService(db_path, hmac_key=KEY) as service:
        assert service.verify().ok  # nothing written yet: the reader sees no trail or an empty one

        @audit_tool_sync(service=service)
        def ping() -> None:
            return None

        ping()
    assert meta_row(db_path, "legacy_through")[1] == "0"
    assert meta_row(db_path, "scheme")[1] == "2"


# ------------------------------------------------------------------ every purge checkpoint


def _checkpointed(db_path: Path, key: str | None = KEY) -> None:
    make_trail(db_path, hmac_key=key)
    purge_through(db_path, 6, batch=3, key=key)  # two checkpoints: through 3 and through 6
    assert [row[2] for row in checkpoints(db_path)] == [3, 6]
    report = verify(db_path, key)
    assert (report.ok, report.checkpoint_through_id, report.rows_checked) == (True, 6, 4)


CHECKPOINT_TAMPERING: dict[str, list[str]] = {
    "boundary-deleted": ["DELETE FROM audit_checkpoints WHERE through_id = 6"],
    "older-changed": ["UPDATE audit_checkpoints SET rows_purged = 30 WHERE through_id = 3"],
    "boundary-count-changed": ["UPDATE audit_checkpoints SET rows_purged = 1 WHERE through_id = 6"],
    "boundary-hash-changed": [
        "UPDATE audit_checkpoints SET last_hash = "
        "(SELECT last_hash FROM audit_checkpoints WHERE through_id = 3) WHERE through_id = 6"
    ],
    "boundary-time-changed": [
        "UPDATE audit_checkpoints SET created_at = '2020-01-01T00:00:00.000000+00:00' "
        "WHERE through_id = 6"
    ],
    "through-moved": ["UPDATE audit_checkpoints SET through_id = 7 WHERE through_id = 6"],
    "swapped-signatures": [
        "CREATE TEMP TABLE s AS SELECT id, signature FROM audit_checkpoints",
        "UPDATE audit_checkpoints SET signature = "
        "(SELECT signature FROM s WHERE s.id != audit_checkpoints.id)",
    ],
    "forged-with-another-signature": [
        "UPDATE audit_checkpoints SET signature = "
        "(SELECT signature FROM audit_checkpoints WHERE through_id = 3) WHERE through_id = 6"
    ],
    "forged-with-a-row-hash": [
        "UPDATE audit_checkpoints SET signature = "
        "(SELECT row_hash FROM audit_logs WHERE id = 7) WHERE through_id = 6"
    ],
    "extra-forged": [
        "INSERT INTO audit_checkpoints (created_at, through_id, last_hash, rows_purged, "
        "signature) SELECT created_at, 8, last_hash, 2, signature FROM audit_checkpoints "
        "WHERE through_id = 6"
    ],
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_TAMPERING))
def test_each_purge_checkpoint_is_checked(db_path: Path, case: str) -> None:
    _checkpointed(db_path)
    execute(db_path, *CHECKPOINT_TAMPERING[case])
    report = verify(db_path)
    assert not report.ok
    assert report.problem
    result = CliRunner(env={"AUDIT_HMAC_KEY": KEY}).invoke(main, ["verify", "--db", str(db_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("TAMPERED")


def test_a_checkpoint_forged_without_the_key_over_deleted_rows_is_caught(db_path: Path) -> None:
    _checkpointed(db_path)
    when = "2026-01-01T00:00:00.000000+00:00"
    last_hash = next(r["row_hash"] for r in disk_rows(db_path) if r["id"] == 8)
    forged = Chainer(None).checkpoint_signature(8, last_hash, 2, when)
    execute(
        db_path,
        "DELETE FROM audit_logs WHERE id <= 8",
        (
            "INSERT INTO audit_checkpoints (created_at, through_id, last_hash, rows_purged, "
            "signature) VALUES (?, 8, ?, 2, ?)",
            (when, last_hash, forged),
        ),
    )
    report = verify(db_path)
    assert (report.ok, report.first_bad_id) == (False, 9)
    assert "checkpoint" in (report.problem or "")
    # the same forgery on an unkeyed trail is accepted: without a key, nothing stops it
    unkeyed = db_path.with_name("unkeyed.db")
    _checkpointed(unkeyed, key=None)
    last_hash = next(r["row_hash"] for r in disk_rows(unkeyed) if r["id"] == 8)
    execute(
        unkeyed,
        "DELETE FROM audit_logs WHERE id <= 8",
        (
            "INSERT INTO audit_checkpoints (created_at, through_id, last_hash, rows_purged, "
            "signature) VALUES (?, 8, ?, 2, ?)",
            (when, last_hash, Chainer(None).checkpoint_signature(8, last_hash, 2, when)),
        ),
    )
    assert verify(unkeyed, None).ok


# ------------------------------------------------------------------ keys and key schemes


@pytest.mark.parametrize("bad", ["", " ", "short", "x" * 31, "é" * 15])
def test_a_short_or_empty_key_is_a_start_up_error(
    bad: str, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AuditConfigError, match=r"hmac_key.*at least 32 bytes"):
        AuditService(db_path, hmac_key=bad)
    monkeypatch.setenv("AUDIT_HMAC_KEY", bad)
    with pytest.raises(AuditConfigError, match=r"AUDIT_HMAC_KEY=.*at least 32 bytes") as info:
        AuditService(db_path)
    if bad.strip():
        assert bad not in str(info.value)  # the key itself never appears
    assert not db_path.exists()
    result = CliRunner().invoke(main, ["verify", "--db", str(db_path)])
    assert result.exit_code != 0
    assert "AUDIT_HMAC_KEY" in result.output
    assert "at least 32 bytes" in result.output


def test_keys_of_32_bytes_are_accepted(db_path: Path) -> None:
    for key in ("x" * 32, "é" * 16):  # counted in UTF-8 bytes
        with AuditService(db_path, hmac_key=key) as service:
            assert service.verify().keyed


def test_hkdf_matches_rfc_5869_and_the_subkeys_are_distinct() -> None:
    # RFC 5869, appendix A.1
    okm = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
        salt=bytes.fromhex("000102030405060708090a0b0c"),
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    raw = KEY.encode()
    chain = Chainer(raw)
    data = b'[1,"x"]'
    as_pseudonym = hmac.new(pseudonym_key(raw) or b"", data, hashlib.sha256).hexdigest()
    as_raw = hmac.new(raw, data, hashlib.sha256).hexdigest()
    assert len({chain.digest(data), as_pseudonym, as_raw}) == 3
    assert chain.for_scheme(1).digest(data) == as_raw
    assert chain.anchor_signature([1]) != Chainer(raw, scheme=1).digest(b'["anchor",1]')


def test_a_pseudonym_is_never_a_valid_row_hash(db_path: Path) -> None:
    # Under scheme 1 a caller could have a value pseudonymised into a row hash.
    with AuditService(db_path, hmac_key=KEY, hmac_fields=["note"]) as service:

        @audit_tool_sync(service=service)
        def tag(note: str) -> str:
            return note

        tag("[1]")
        [entry] = service.get_logs()
    digest = str(entry.parameters["note"]).removeprefix("hmac:")
    assert not Chainer(KEY.encode()).digest(b"[1]").startswith(digest)
    assert hmac.new(KEY.encode(), b"[1]", hashlib.sha256).hexdigest()[:32] != digest


@pytest.fixture
def scheme1_trail(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, path)
    return path


def test_a_trail_written_before_the_key_schemes_still_verifies(
    scheme1_trail: Path, tmp_path: Path
) -> None:
    assert {row[0] for row in meta(scheme1_trail)} == {"legacy_through"}  # scheme 1: no record
    report = verify(scheme1_trail, FIXTURE_KEY)
    assert (report.ok, report.rows_checked, report.checkpoint_through_id, report.keyed) == (
        True,
        7,
        5,
        True,
    )
    done = run_cli(
        "verify",
        "--db",
        str(scheme1_trail),
        cwd=tmp_path,
        env=cli_env(AUDIT_HMAC_KEY=FIXTURE_KEY),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: 7 entries verified, after a purge through id 5 (keyed)")
    # and a wrong key still fails
    assert not verify(scheme1_trail, "w" * 40).ok


def test_a_scheme1_trail_grows_and_purges_under_its_own_scheme(scheme1_trail: Path) -> None:
    make_trail(scheme1_trail, rows=4, hmac_key=FIXTURE_KEY)
    assert {row[0] for row in meta(scheme1_trail)} == {"legacy_through"}
    report = verify(scheme1_trail, FIXTURE_KEY)
    assert (report.ok, report.rows_checked) == (True, 11)
    purge_through(scheme1_trail, 9, batch=2, key=FIXTURE_KEY)
    report = verify(scheme1_trail, FIXTURE_KEY)
    assert (report.ok, report.checkpoint_through_id, report.rows_checked) == (True, 9, 7)


def test_a_scheme1_trail_cannot_be_passed_off_with_a_forged_scheme_record(
    scheme1_trail: Path,
) -> None:
    forged = Chainer(None).meta_signature("scheme", "2")
    execute(
        scheme1_trail,
        ("INSERT INTO audit_meta (key, value, signature) VALUES ('scheme', '2', ?)", (forged,)),
    )
    report = verify(scheme1_trail, FIXTURE_KEY)
    assert (report.ok, report.first_bad_id) == (False, 1)
    assert "key scheme" in (report.problem or "")
