"""verify, purge and backup on both stores; tampering with the central trail.

The tampering is done with plain psycopg, as an attacker with write access to
the central database would; each case must be reported at the right row.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from finops_audit._chain import Chainer
from finops_audit.exceptions import AuditStorageError
from finops_audit.maintenance import VerifyReport
from finops_audit.storage._pg_backup import find_pg_dump
from finops_audit.storage.base import AuditReader, LogQuery
from finops_audit.storage.postgres import PostgresAuditStore
from finops_audit.storage.sqlite import SQLiteAuditStore

from .conftest import (
    FLEET_CHAINER,
    HISTORY,
    HISTORY_CHAINER,
    REPLICA,
    Trail,
    _history_rows,
    copy_sqlite,
    load,
)
from .test_queries import plain

pytestmark = pytest.mark.asyncio

NewDatabase = Callable[[], str]


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url) as conn:
        for statement in statements:
            conn.execute(statement)


async def central_verify(url: str, chainer: Chainer) -> VerifyReport:
    store = PostgresAuditStore(url)
    try:
        return await store.verify(chainer)
    finally:
        await store.close()


# ---------------------------------------------------------------------- verify


async def test_verify_agrees_on_an_untouched_trail(
    both: tuple[AuditReader, AuditReader],
    history_both: tuple[AuditReader, AuditReader],
) -> None:
    for (local, central), chainer in ((both, FLEET_CHAINER), (history_both, HISTORY_CHAINER)):
        mine, theirs = await local.verify(chainer), await central.verify(chainer)
        assert mine.ok, mine
        assert theirs.ok, theirs
        assert theirs.rows_checked == mine.rows_checked
        assert theirs.legacy_rows == mine.legacy_rows
        assert theirs.keyed == mine.keyed == chainer.keyed
    legacy = await history_both[1].verify(HISTORY_CHAINER)
    assert legacy.legacy_rows == 3
    assert legacy.rows_checked == 3 + len(HISTORY)


async def test_a_wrong_key_fails_in_both(both: tuple[AuditReader, AuditReader]) -> None:
    wrong = Chainer(b"not the key")
    for store in both:
        report = await store.verify(wrong)
        assert not report.ok
        assert "AUDIT_HMAC_KEY" in (report.problem or "")


def _row(url: str, sql: str) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


_COPY_ROW = (
    "INSERT INTO audit_logs (event_id, replica_id, seq, timestamp, tool_name, parameters, "
    "parameters_text, status, error_message, execution_time_ms, row_hash, labels, labels_text) "
    "SELECT gen_random_uuid(), {replica}, seq, timestamp, tool_name, parameters, "
    "parameters_text, status, error_message, execution_time_ms, row_hash, labels, labels_text "
    "FROM audit_logs WHERE id = {id}"
)

#: name -> (statements, central id reported, words in the problem)
TAMPERING: dict[str, tuple[list[str], int, str]] = {
    "status": (
        [
            "UPDATE audit_logs SET status = CASE status WHEN 'SUCCESS' THEN 'FAILURE' "
            "ELSE 'SUCCESS' END WHERE id = 20"
        ],
        20,
        "does not match its hash",
    ),
    "parameters-text": (
        ["UPDATE audit_logs SET parameters_text = '{}' WHERE id = 20"],
        20,
        "does not match its hash",
    ),
    "parameters-jsonb-only": (
        ["""UPDATE audit_logs SET parameters = '{"region": "moon"}' WHERE id = 20"""],
        20,
        "jsonb",
    ),
    "caller-column": (
        ["""UPDATE audit_logs SET "user" = 'mallory' WHERE id = 20"""],
        20,
        "does not match its hash",
    ),
    "labels-text": (
        ["""UPDATE audit_logs SET labels_text = '{"team":"evil"}' WHERE id = 20"""],
        20,
        "does not match its hash",
    ),
    "timestamp": (
        ["UPDATE audit_logs SET timestamp = timestamp + interval '1 microsecond' WHERE id = 20"],
        20,
        "does not match its hash",
    ),
    "duration": (
        ["UPDATE audit_logs SET execution_time_ms = 0.001 WHERE id = 20"],
        20,
        "does not match its hash",
    ),
    "hash-removed": (
        ["UPDATE audit_logs SET row_hash = NULL WHERE id = 20"],
        20,
        "no hash",
    ),
    "middle-row-deleted": (
        ["DELETE FROM audit_logs WHERE id = 20"],
        21,
        "rows 20..20 are missing",
    ),
    "first-rows-deleted": (
        ["DELETE FROM audit_logs WHERE id <= 3"],
        4,
        "no purge checkpoint",
    ),
    "rows-swapped": (
        [
            "UPDATE audit_logs SET seq = -1 WHERE id = 20",
            "UPDATE audit_logs SET seq = 20 WHERE id = 21",
            "UPDATE audit_logs SET seq = 21 WHERE id = 20",
        ],
        21,
        "does not match its hash",
    ),
    "row-inserted-twice": (
        [_COPY_ROW.format(replica=f"'{REPLICA}'", id=20)],
        50,
        "appears twice",
    ),
    "unknown-replica": (
        [_COPY_ROW.format(replica="'ghost'", id=10)],
        50,
        "no registration",
    ),
    "anchor-moved": (
        ["UPDATE audit_replicas SET anchor_seq = 5"],
        1,
        "registration",
    ),
    "forged-checkpoint": (
        [
            "INSERT INTO audit_checkpoints (replica_id, through_seq, last_hash, rows_purged, "
            f"signature) SELECT '{REPLICA}', 30, row_hash, 30, 'forged' "
            "FROM audit_logs WHERE id = 30",
            "DELETE FROM audit_logs WHERE id <= 30",
        ],
        31,
        "checkpoint",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
async def test_verify_finds_tampering(
    pg_database: NewDatabase, fleet: Trail, fleet_pg: str, case: str
) -> None:
    url = pg_database()
    load(fleet.path, url, fleet.chainer)
    statements, bad_id, words = TAMPERING[case]
    execute(url, *statements)
    report = await central_verify(url, fleet.chainer)
    assert not report.ok, case
    assert report.first_bad_id == bad_id, report
    assert words in (report.problem or ""), report
    replica = "ghost" if case == "unknown-replica" else REPLICA
    assert f"replica {replica!r}" in (report.problem or "")


async def test_rows_deleted_from_the_end_centrally_are_caught_by_the_delivery_anchor(
    pg_database: NewDatabase, fleet: Trail
) -> None:
    url = pg_database()
    load(fleet.path, url, fleet.chainer)
    execute(url, "DELETE FROM audit_logs WHERE id >= 45")
    report = await central_verify(url, fleet.chainer)
    assert not report.ok
    assert report.rows_checked == 44
    assert f"replica {REPLICA!r}: its newest rows were deleted: seq 45..49" in (
        report.problem or ""
    )


async def test_every_replica_is_verified(
    pg_database: NewDatabase, history: Trail, history2: Trail
) -> None:
    url = pg_database()
    # interleaved, as two replicas forwarding at once: their central ids mix
    buffers = {"replica-a": "", "replica-b": ""}
    for after in range(0, 3 + len(HISTORY), 6):
        for name, trail in (("replica-a", history), ("replica-b", history2)):
            buffers[name] = load(
                trail.path,
                url,
                trail.chainer,
                name,
                batch=6,
                buffer_id=buffers[name] or None,
                after=after,
            )
    report = await central_verify(url, HISTORY_CHAINER)
    assert report.ok, report
    assert report.rows_checked == 2 * (3 + len(HISTORY))
    assert report.legacy_rows == 6
    (bad_id,) = _row(url, "SELECT id FROM audit_logs WHERE replica_id = 'replica-b' AND seq = 12")
    execute(url, f"UPDATE audit_logs SET error_message = 'edited' WHERE id = {bad_id}")
    report = await central_verify(url, HISTORY_CHAINER)
    assert not report.ok
    assert report.first_bad_id == bad_id
    assert (report.problem or "").startswith("replica 'replica-b': row seq 12")


# ---------------------------------------------------------------------- purge


async def _purge_both(
    trail: Trail, tmp_path: Path, url: str, cutoff: datetime
) -> tuple[SQLiteAuditStore, PostgresAuditStore]:
    local = SQLiteAuditStore(copy_sqlite(trail.path, tmp_path / "copy.db"))
    load(trail.path, url, trail.chainer)
    central = PostgresAuditStore(url)
    mine = await local.purge(cutoff, trail.chainer)
    theirs = await central.purge(cutoff, trail.chainer)
    assert (theirs.rows_deleted, theirs.through_id) == (mine.rows_deleted, mine.through_id)
    return local, central


@pytest.mark.parametrize(
    "cutoff",
    [
        datetime(2025, 4, 15, tzinfo=timezone.utc),  # a whole month dropped, then batches
        datetime(2025, 3, 30, 13, 30, tzinfo=timezone.utc),  # inside the first month
        datetime(2030, 1, 1, tzinfo=timezone.utc),  # everything
        datetime(2000, 1, 1, tzinfo=timezone.utc),  # nothing
    ],
    ids=["mid-april", "first-day", "all", "none"],
)
async def test_purge_removes_the_same_rows_and_both_still_verify(
    pg_database: NewDatabase, history: Trail, tmp_path: Path, cutoff: datetime
) -> None:
    local, central = await _purge_both(history, tmp_path, pg_database(), cutoff)
    try:
        mine, theirs = await local.verify(HISTORY_CHAINER), await central.verify(HISTORY_CHAINER)
        assert mine.ok, mine
        assert theirs.ok, theirs
        assert theirs.rows_checked == mine.rows_checked
        everything = LogQuery(limit=1000)
        assert plain(await central.page_after(everything, 0)) == await local.page_after(
            everything, 0
        )
        assert await central.count(everything) == await local.count(everything)
        again = await central.purge(cutoff, HISTORY_CHAINER)
        assert again.rows_deleted == 0
        assert (await central.verify(HISTORY_CHAINER)).ok
    finally:
        await local.close()
        await central.close()


async def test_purge_drops_whole_months_and_checkpoints_each_step(
    pg_database: NewDatabase, history: Trail
) -> None:
    url = pg_database()
    load(history.path, url, history.chainer)
    store = PostgresAuditStore(url)
    try:
        report = await store.purge(datetime(2025, 4, 15, tzinfo=timezone.utc), HISTORY_CHAINER)
    finally:
        await store.close()
    assert report.batches == 2  # March dropped, then one batch of April
    with psycopg.connect(url) as conn:
        parts = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'audit_logs'::regclass"
            )
        }
        checkpoints = conn.execute(
            "SELECT replica_id, through_seq, rows_purged FROM audit_checkpoints ORDER BY id"
        ).fetchall()
    assert "audit_logs_202503" not in parts
    assert "audit_logs_202504" in parts
    # March holds seqs 1-7 and 9 (9 started on March 31 but committed after 8)
    assert checkpoints == [(REPLICA, 9, 8), (REPLICA, 17, 9)]


async def test_purge_by_time_leaves_a_late_row_below_the_checkpoint(
    pg_database: NewDatabase, history: Trail
) -> None:
    """seq 8 started on April 1, seq 9 on March 31: a cutoff of April 1 removes 9 and
    keeps 8. The checkpoint is at 9, so verify starts at 10 (SQLite would stop at 7)."""
    url = pg_database()
    load(history.path, url, history.chainer)
    store = PostgresAuditStore(url)
    try:
        report = await store.purge(datetime(2025, 4, 1, tzinfo=timezone.utc), HISTORY_CHAINER)
        assert report.rows_deleted == 8
        verdict = await store.verify(HISTORY_CHAINER)
        assert verdict.ok, verdict
        assert verdict.checkpoint_through_id == 9
        assert verdict.rows_checked == 3 + len(HISTORY) - 9
        assert [e.id for e in await store.page_after(LogQuery(limit=3), 0)] == [8, 10, 11]
    finally:
        await store.close()


async def test_rows_forwarded_after_a_purge_continue_the_chain(
    pg_database: NewDatabase, history: Trail, tmp_path: Path
) -> None:
    url = pg_database()
    path = copy_sqlite(history.path, tmp_path / "buffer.db")
    buffer_id = load(path, url, history.chainer)
    store = PostgresAuditStore(url)
    try:
        await store.purge(datetime(2030, 1, 1, tzinfo=timezone.utc), HISTORY_CHAINER)
        writer = SQLiteAuditStore(path, chainer=HISTORY_CHAINER)
        later = [(r[0].replace("2025", "2031", 1), *r[1:]) for r in _history_rows()[:5]]
        try:
            await writer.write_batch(later)
        finally:
            await writer.close()
        load(path, url, history.chainer, buffer_id=buffer_id, after=3 + len(HISTORY))
        report = await store.verify(HISTORY_CHAINER)
        assert report.ok, report
        assert report.rows_checked == 5
    finally:
        await store.close()


# ---------------------------------------------------------------------- backup


async def test_backup_writes_a_private_file(
    kind: str, fresh: Callable[[Trail], AuditReader], fleet: Trail, tmp_path: Path
) -> None:
    store = fresh(fleet)
    dest = tmp_path / "backups" / "trail.bak"
    report = await store.backup(dest)
    assert report.path == dest
    assert report.rows == 49
    assert report.bytes == dest.stat().st_size > 0
    assert os.stat(dest).st_mode & 0o777 == 0o600
    with pytest.raises(AuditStorageError, match="already exists"):
        await store.backup(dest)


async def test_a_central_backup_restores_and_verifies(
    pg_database: NewDatabase, fleet_pg: str, fleet: Trail, tmp_path: Path
) -> None:
    pg_dump = find_pg_dump()
    assert pg_dump is not None
    source = PostgresAuditStore(fleet_pg)
    target_url = pg_database()
    target = PostgresAuditStore(target_url)
    try:
        report = await source.backup(tmp_path / "central.dump")
        subprocess.run(
            [
                str(pg_dump.with_name("pg_restore")),
                "--no-owner",
                "-d",
                target_url,
                str(report.path),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert (await target.verify(fleet.chainer)).ok
        everything = LogQuery(limit=1000)
        assert await target.page_after(everything, 0) == await source.page_after(everything, 0)
        # the id sequence came along: the next id continues after the copied ones
        (next_id,) = _row(target_url, "SELECT nextval('audit_logs_id_seq')")
        assert next_id == 50
    finally:
        await source.close()
        await target.close()


async def test_backup_without_pg_dump_says_what_is_needed(
    monkeypatch: pytest.MonkeyPatch, fleet_pg: str, tmp_path: Path
) -> None:
    from finops_audit.storage import _pg_backup

    monkeypatch.setattr(_pg_backup, "find_pg_dump", lambda: None)
    store = PostgresAuditStore(fleet_pg)
    try:
        with pytest.raises(AuditStorageError, match="needs pg_dump"):
            await store.backup(tmp_path / "x.dump")
    finally:
        await store.close()
    assert not (tmp_path / "x.dump").exists()
