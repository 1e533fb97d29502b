"""Anchors: deleting the newest rows (or rewriting the whole chain) is detectable.

The writer appends signed anchors to ``AUDIT_ANCHOR_PATH``; ``verify --anchors``
checks the trail against them. Attacks are made with plain ``sqlite3`` on the
closed file, and on the anchor file with plain file writes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from finops_audit import AuditConfigError, AuditService, audit_tool_sync
from finops_audit._chain import Chainer
from finops_audit.cli import main
from finops_audit.maintenance import VerifyReport

from ._util import cli_env, execute, mode, no_traceback, run_cli
from .test_verify import _recompute_chain

KEY = "anchor-test-key-0123456789abcdef-0123"


def record(db_path: Path, anchors: Path, calls: int = 10, key: str | None = KEY) -> None:
    """``calls`` entries with anchors at ``anchors`` (one at close at least)."""
    with AuditService(db_path, hmac_key=key, anchor_path=anchors) as service:

        @audit_tool_sync(service=service)
        def pay(to: str) -> str:
            return to

        for i in range(calls):
            pay(f"acct-{i}")


def lines(anchors: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in anchors.read_bytes().splitlines()]


def verify(db_path: Path, anchors: Path | None, key: str | None = KEY) -> VerifyReport:
    with AuditService(db_path, hmac_key=key) as service:
        return service.verify(anchors=anchors)


def cli_verify(db_path: Path, anchors: Path, key: str | None = KEY) -> tuple[int, str, str]:
    env = {"AUDIT_HMAC_KEY": key} if key else None
    result = CliRunner(env=env).invoke(
        main, ["verify", "--db", str(db_path), "--anchors", str(anchors)]
    )
    no_traceback(result.output, result.stderr)
    return result.exit_code, result.stdout, result.stderr


def _cut_after(db_path: Path, last: int) -> None:
    """The issue's attack: delete the newest rows and hide the gap in sqlite_sequence."""
    execute(
        db_path,
        f"DELETE FROM audit_logs WHERE id > {last}",
        f"UPDATE sqlite_sequence SET seq = {last} WHERE name = 'audit_logs'",
    )


# ------------------------------------------------------------------ writing


def test_close_appends_one_signed_private_anchor_line(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "other-volume" / "anchors.jsonl"
    record(db_path, anchors)
    assert mode(anchors) == 0o600
    [line] = lines(anchors)
    assert set(line) == {"anchor", "scheme", "db", "last_id", "last_hash", "rows", "time", "sig"}
    assert (line["anchor"], line["scheme"], line["last_id"], line["rows"]) == (1, 2, 10, 10)
    assert str(line["sig"]).startswith("hmac-sha256:")
    conn = sqlite3.connect(db_path)
    try:
        (last_hash,) = conn.execute("SELECT row_hash FROM audit_logs WHERE id = 10").fetchone()
    finally:
        conn.close()
    assert line["last_hash"] == last_hash
    # appended, never rewritten: a second session adds a line
    record(db_path, anchors, calls=3)
    assert [a["last_id"] for a in lines(anchors)] == [10, 13]
    report = verify(db_path, anchors)
    assert (report.ok, report.anchors_checked, report.rows_checked) == (True, 2, 13)
    code, out, err = cli_verify(db_path, anchors)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "OK: 13 entries verified (keyed), 2 anchors held"
    assert "still holds every anchored entry" in out


def test_no_anchor_without_new_rows(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors, calls=2)
    with AuditService(db_path, hmac_key=KEY, anchor_path=anchors) as service:
        assert service.verify().ok  # reads only
    assert len(lines(anchors)) == 1


def test_anchors_are_written_during_activity_every_interval(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    with AuditService(db_path, hmac_key=KEY, anchor_path=anchors, anchor_interval=0.05) as service:

        @audit_tool_sync(service=service)
        def tick(i: int) -> int:
            return i

        deadline = time.monotonic() + 30
        i = 0
        while not (anchors.exists() and len(lines(anchors)) >= 2):
            assert time.monotonic() < deadline, "no anchors while the writer was busy"
            tick(i)
            service.flush()
            i += 1
        during = len(lines(anchors))
        tick(i)  # committed after the last anchor: anchored by the next interval or at close
        i += 1
    found = lines(anchors)
    assert len(found) == during + 1
    ids = [int(str(a["last_id"])) for a in found]
    assert ids == sorted(ids)
    assert ids[-1] == i
    assert verify(db_path, anchors).anchors_checked == len(found)


def test_an_unkeyed_anchor_says_so(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors, key=None)
    [line] = lines(anchors)
    assert str(line["sig"]).startswith("sha256:")
    report = verify(db_path, anchors, key=None)
    assert (report.ok, report.keyed, report.anchors_checked) == (True, False, 1)
    code, out, _ = cli_verify(db_path, anchors, key=None)
    assert code == 0
    assert "anyone able to write the file can rebuild the chain" in out


def test_a_failing_anchor_file_never_stops_the_writer(
    db_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "a-directory"
    blocked.mkdir()
    with caplog.at_level(logging.WARNING, logger="finops_audit"):
        record(db_path, blocked)
    with AuditService(db_path, hmac_key=KEY) as service:
        assert len(service.get_logs()) == 10
        assert service.verify().ok
    assert any("could not append an anchor" in r.getMessage() for r in caplog.records)


def test_anchor_settings_are_checked_at_start(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AuditConfigError, match="hash chain"):
        AuditService(db_path, anchor_path=tmp_path / "a.jsonl", hash_chain=False)
    with pytest.raises(AuditConfigError, match="anchor_interval"):
        AuditService(db_path, anchor_interval=0)
    monkeypatch.setenv("AUDIT_ANCHOR_PATH", "")
    with pytest.raises(AuditConfigError, match="AUDIT_ANCHOR_PATH"):
        AuditService(db_path)


def test_a_server_process_anchors_from_its_environment(tmp_path: Path) -> None:
    db_path = tmp_path / "audit.db"
    anchors = tmp_path / "anchors.jsonl"
    env = cli_env(AUDIT_HMAC_KEY=KEY, AUDIT_ANCHOR_PATH=str(anchors))
    done = run_cli("demo", "--calls", "200", "--db", str(db_path), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert lines(anchors)[-1]["last_id"] == 200
    _cut_after(db_path, 150)
    done = run_cli("verify", "--db", str(db_path), "--anchors", str(anchors), cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("TAMPERED at id 151: anchored row 200 is gone")


# ------------------------------------------------------------------ attacks on the trail


@pytest.mark.parametrize("key", [KEY, None], ids=["keyed", "unkeyed"])
def test_deleting_the_newest_rows_fails_verify_with_anchors(
    db_path: Path, tmp_path: Path, key: str | None
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors, key=key)
    _cut_after(db_path, 7)
    assert verify(db_path, None, key).ok  # the chain alone cannot tell
    report = verify(db_path, anchors, key)
    assert (report.ok, report.first_bad_id, report.rows_checked) == (False, 8, 7)
    assert "anchored row 10 is gone" in (report.problem or "")
    assert str(anchors) in (report.problem or "")
    code, out, err = cli_verify(db_path, anchors, key)
    assert (code, out) == (1, "")
    assert err.startswith("TAMPERED at id 8: anchored row 10 is gone")


def test_deleting_every_row_fails_verify_with_anchors(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors)
    execute(db_path, "DELETE FROM audit_logs", "DELETE FROM sqlite_sequence")
    assert verify(db_path, None).ok
    report = verify(db_path, anchors)
    assert (report.ok, report.first_bad_id) == (False, 1)


def test_a_rebuilt_unkeyed_chain_contradicts_its_anchor(db_path: Path, tmp_path: Path) -> None:
    # Without a key an intruder can rebuild the chain after an edit; the anchor
    # kept elsewhere still holds the old hash of the last row.
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors, key=None)
    execute(db_path, 'UPDATE audit_logs SET parameters = \'{"to": "attacker"}\' WHERE id = 4')
    _recompute_chain(db_path)
    assert verify(db_path, None, key=None).ok
    report = verify(db_path, anchors, key=None)
    assert (report.ok, report.first_bad_id) == (False, 10)
    assert "differs from its anchor" in (report.problem or "")


def test_anchors_of_purged_rows_still_hold(db_path: Path, tmp_path: Path) -> None:
    import asyncio

    from finops_audit.storage import _sqlite_maintenance as maintenance_sql

    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors)
    record(db_path, anchors, calls=5)
    chainer = Chainer(KEY.encode())
    asyncio.run(maintenance_sql.purge(db_path, 5000, chainer, "9999", max_id=10))
    report = verify(db_path, anchors)
    assert (report.ok, report.checkpoint_through_id, report.anchors_checked) == (True, 10, 2)
    asyncio.run(maintenance_sql.purge(db_path, 5000, chainer, "9999"))
    assert verify(db_path, anchors).ok  # all purged, every anchor covered by a checkpoint


# ------------------------------------------------------------------ attacks on the anchor file


def _write(anchors: Path, data: bytes) -> None:
    anchors.write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "line", "words"),
    [
        (lambda b: b[:-20], 2, "truncated"),
        (lambda b: b[:-1], 2, "truncated"),
        (lambda b: b.replace(b'"last_id":10', b'"last_id":1O', 1), 2, "not a JSON anchor"),
        (lambda b: b"{}\n" + b, 1, "not an anchor record"),
        (lambda b: b"garbage\n" + b, 1, "not a JSON anchor"),
        (lambda b: b.replace(b'"rows":10', b'"rows":"10"', 1), 2, "not an anchor record"),
        (lambda b: b.replace(b'"rows":10', b'"rows":9', 1), 2, "signature does not match"),
        (lambda b: b.replace(b'"last_id":10', b'"last_id":9', 1), 2, "signature does not match"),
    ],
    ids=[
        "cut-mid-line",
        "no-final-newline",
        "garbled",
        "empty-object",
        "not-json",
        "wrong-type",
        "count-lowered",
        "id-moved",
    ],
)
def test_a_damaged_anchor_file_is_an_error_naming_file_and_line(
    db_path: Path, tmp_path: Path, damage: object, line: int, words: str
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors, calls=5)
    record(db_path, anchors, calls=5)
    assert callable(damage)
    _write(anchors, damage(anchors.read_bytes()))
    report = verify(db_path, anchors)
    assert not report.ok
    assert f"anchor file {anchors} line {line}: " in (report.problem or "")
    assert words in (report.problem or "")
    code, out, err = cli_verify(db_path, anchors)
    assert (code, out) == (1, "")
    assert err.startswith(f"TAMPERED: anchor file {anchors} line {line}: ")


def test_an_anchor_forged_without_the_key_fails(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors)
    _cut_after(db_path, 7)
    # the intruder replaces the anchor with one for row 7 signed the only way they can
    [line] = lines(anchors)
    conn = sqlite3.connect(db_path)
    try:
        (last_hash,) = conn.execute("SELECT row_hash FROM audit_logs WHERE id = 7").fetchone()
    finally:
        conn.close()
    fields = [1, 2, line["db"], 7, last_hash, 7, line["time"]]
    forged = {**line, "last_id": 7, "last_hash": last_hash, "rows": 7}
    for sig in (
        Chainer(None).anchor_signature(fields),
        Chainer(b"a guessed key of thirty-two bytes!", scheme=2).anchor_signature(fields),
        line["sig"],
    ):
        _write(anchors, orjson.dumps({**forged, "sig": sig}) + b"\n")
        report = verify(db_path, anchors)
        assert not report.ok
        assert "line 1" in (report.problem or "")


def test_keyed_anchors_need_the_key(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors)
    os.chmod(db_path, 0o600)
    report = verify(db_path, anchors, key=None)
    assert not report.ok
    assert "set AUDIT_HMAC_KEY" in (report.problem or "")


def test_a_missing_anchor_file_is_a_usage_error(db_path: Path, tmp_path: Path) -> None:
    record(db_path, tmp_path / "anchors.jsonl", calls=1)
    result = CliRunner(env={"AUDIT_HMAC_KEY": KEY}).invoke(
        main, ["verify", "--db", str(db_path), "--anchors", str(tmp_path / "nope.jsonl")]
    )
    assert result.exit_code == 2
    assert "nope.jsonl" in result.output


def test_a_trail_disguised_as_older_than_the_chain_is_caught_by_its_anchors(
    db_path: Path, tmp_path: Path
) -> None:
    # The file alone cannot tell this from a genuine old trail: the intruder
    # drops the chain's traces, edits a row, and the next open upgrades it.
    anchors = tmp_path / "anchors.jsonl"
    record(db_path, anchors)
    execute(
        db_path,
        "DROP TABLE audit_meta",
        "ALTER TABLE audit_logs DROP COLUMN row_hash",
        'UPDATE audit_logs SET parameters = \'{"to": "attacker"}\' WHERE id = 5',
        "PRAGMA user_version = 1",
    )
    record(db_path, tmp_path / "elsewhere.jsonl", calls=1)  # a writer upgrades it
    assert verify(db_path, None).ok  # "pre-chain" rows 1..10, then row 11
    report = verify(db_path, anchors)
    assert (report.ok, report.first_bad_id) == (False, 10)
    assert "differs from its anchor" in (report.problem or "")


def test_check_anchors_counts_rows_and_purged_ones() -> None:
    # The count is implied by a contiguous, verified walk; checked anyway, so a
    # walk that ever miscounted would not pass unnoticed.
    from finops_audit._anchors import Anchor, check_anchors

    anchor = Anchor(line=3, last_id=8, last_hash="h8", rows=8, time="t")
    assert check_anchors([anchor], "f", {8: "h8"}, 1, 10, None, None) is None
    assert check_anchors([anchor], "f", {8: "h8"}, 5, 10, 4, "h4") is None  # 1..4 purged
    short = check_anchors([anchor], "f", {8: "h8"}, 3, 10, None, None)
    assert short is not None
    assert short[0] == 8
    assert "holds 6 rows through id 8" in short[1]
    assert "counted 8" in short[1]
    assert "f line 3" in short[1]
    purged = check_anchors([anchor], "f", {}, None, None, 8, "other")
    assert purged is not None
    assert "purge checkpoint at row 8 contradicts" in purged[1]
    assert check_anchors([anchor], "f", {}, None, None, 9, "h9") is None
