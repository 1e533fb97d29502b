"""Central delivery anchors and key schemes: what central verify proves (issue 10).

Each forwarded batch leaves, in the same transaction, a signed anchor of the
newest row delivered for its replica (``audit_anchors``). An attacker with
write access to the central database deletes, changes, swaps and forges
those anchors, and deletes a replica's newest rows; each must fail verify.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finops_audit._chain import Chainer
from finops_audit.forwarding.base import ReplicaInfo
from finops_audit.forwarding.postgres import (
    PostgresSink,
    central_anchor_signature,
    replica_signature,
)

from .conftest import REPLICA, Trail, buffer_rows, load
from .test_maintenance import NewDatabase, central_verify, execute

pytestmark = pytest.mark.asyncio

FIXTURE = Path(__file__).parent.parent / "operations" / "data" / "scheme1_keyed.db"
FIXTURE_KEY = "scheme-one-fixture-key-0123456789abcdef"


def _row(url: str, sql: str) -> tuple[object, ...]:
    import psycopg

    with psycopg.connect(url) as conn:
        found = conn.execute(sql).fetchone()
    assert found is not None
    return tuple(found)


async def test_every_batch_moves_the_signed_anchor_forward(
    pg_database: NewDatabase, fleet: Trail
) -> None:
    url = pg_database()
    load(fleet.path, url, fleet.chainer, batch=7)
    replica, last_seq, last_hash, created, signature = _row(url, "SELECT * FROM audit_anchors")
    (top_hash,) = _row(url, "SELECT row_hash FROM audit_logs ORDER BY seq DESC LIMIT 1")
    assert (replica, last_seq, last_hash) == (REPLICA, 49, top_hash)
    assert signature == central_anchor_signature(
        fleet.chainer, REPLICA, 49, str(top_hash), str(created)
    )
    # a batch sent again (older rows) never moves the anchor back
    load(fleet.path, url, fleet.chainer, batch=7, buffer_id=_buffer_id(url))
    assert _row(url, "SELECT last_seq FROM audit_anchors") == (49,)
    report = await central_verify(url, fleet.chainer)
    assert (report.ok, report.rows_checked) == (True, 49), report


def _buffer_id(url: str) -> str:
    return str(_row(url, "SELECT buffer_id FROM audit_replicas")[0])


TAMPERING = {
    "anchor-deleted": (["DELETE FROM audit_anchors"], "delivery anchor is missing"),
    "anchor-moved-back": (
        ["UPDATE audit_anchors SET last_seq = 40"],
        "delivery anchor does not match its signature",
    ),
    "anchor-hash-changed": (
        ["UPDATE audit_anchors SET last_hash = (SELECT row_hash FROM audit_logs WHERE seq = 3)"],
        "delivery anchor does not match its signature",
    ),
    "anchor-time-changed": (
        ["UPDATE audit_anchors SET created_at = '2020-01-01T00:00:00.000000Z'"],
        "delivery anchor does not match its signature",
    ),
    "anchor-forged-with-a-row-hash": (
        ["UPDATE audit_anchors SET signature = (SELECT row_hash FROM audit_logs WHERE seq = 49)"],
        "delivery anchor does not match its signature",
    ),
    "registration-deleted-with-rows": (
        ["DELETE FROM audit_logs", "DELETE FROM audit_replicas"],
        "has a delivery anchor but no registration",
    ),
    "newest-rows-deleted": (
        ["DELETE FROM audit_logs WHERE seq > 45"],
        "its newest rows were deleted: seq 46..49",
    ),
    "every-row-deleted": (["DELETE FROM audit_logs"], "its newest rows were deleted: seq 1..49"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
async def test_central_anchor_tampering_fails_verify(
    pg_database: NewDatabase, fleet: Trail, case: str
) -> None:
    url = pg_database()
    load(fleet.path, url, fleet.chainer)
    statements, words = TAMPERING[case]
    execute(url, *statements)
    report = await central_verify(url, fleet.chainer)
    assert not report.ok
    assert words in (report.problem or ""), report
    assert f"replica {REPLICA!r}" in (report.problem or "")


async def test_an_anchor_forged_without_the_key_fails(
    pg_database: NewDatabase, fleet: Trail
) -> None:
    url = pg_database()
    load(fleet.path, url, fleet.chainer)
    execute(url, "DELETE FROM audit_logs WHERE seq > 45")
    (row_hash,) = _row(url, "SELECT row_hash FROM audit_logs WHERE seq = 45")
    forged = central_anchor_signature(Chainer(None), REPLICA, 45, str(row_hash), "t")
    execute(
        url,
        f"UPDATE audit_anchors SET last_seq = 45, last_hash = '{row_hash}', "
        f"created_at = 't', signature = '{forged}'",
    )
    report = await central_verify(url, fleet.chainer)
    assert not report.ok
    assert "delivery anchor does not match" in (report.problem or "")


async def test_anchors_swapped_between_replicas_fail(
    pg_database: NewDatabase, history: Trail, history2: Trail
) -> None:
    url = pg_database()
    load(history.path, url, history.chainer, "replica-a")
    load(history2.path, url, history2.chainer, "replica-b")
    assert (await central_verify(url, history.chainer)).ok
    execute(
        url,
        "UPDATE audit_anchors SET replica_id = CASE replica_id WHEN 'replica-a' "
        "THEN 'x' ELSE 'replica-a' END",
        "UPDATE audit_anchors SET replica_id = 'replica-b' WHERE replica_id = 'x'",
    )
    report = await central_verify(url, history.chainer)
    assert not report.ok


def _forward_scheme1(path: Path, url: str, chainer: Chainer) -> str:
    rows, legacy = buffer_rows(path)
    replica = ReplicaInfo("old-replica", "b" * 32, legacy, scheme=1)
    sink = PostgresSink(url, chainer)
    try:
        # rows 1..5 were purged in the buffer: its first row follows the checkpoint's hash
        import sqlite3

        conn = sqlite3.connect(path)
        try:
            (prev,) = conn.execute("SELECT last_hash FROM audit_checkpoints").fetchone()
        finally:
            conn.close()
        sink.send(replica, rows, prev)
    finally:
        sink.close()
    return "old-replica"


async def test_a_buffer_of_the_older_key_scheme_verifies_centrally(
    pg_database: NewDatabase, tmp_path: Path
) -> None:
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, path)
    url = pg_database()
    chainer = Chainer(FIXTURE_KEY.encode())
    _forward_scheme1(path, url, chainer)
    report = await central_verify(url, chainer)
    assert (report.ok, report.rows_checked) == (True, 7), report
    # its registration names the scheme, signed: the anchor is required
    execute(url, "DELETE FROM audit_anchors")
    assert not (await central_verify(url, chainer)).ok


async def test_a_registration_from_before_anchors_still_verifies(
    pg_database: NewDatabase, tmp_path: Path
) -> None:
    # What the previous version left: a scheme-1 registration signed with the
    # raw key over five fields, and no delivery anchor.
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, path)
    url = pg_database()
    chainer = Chainer(FIXTURE_KEY.encode())
    _forward_scheme1(path, url, chainer)
    replica_id, buffer_id, anchor_seq, anchor_hash, legacy = _row(
        url,
        "SELECT replica_id, buffer_id, anchor_seq, anchor_hash, legacy_through FROM audit_replicas",
    )
    old = replica_signature(
        chainer.for_scheme(1),
        str(replica_id),
        str(buffer_id),
        int(str(anchor_seq)),
        str(anchor_hash),
        int(str(legacy)),
    )
    execute(url, "DELETE FROM audit_anchors", f"UPDATE audit_replicas SET signature = '{old}'")
    report = await central_verify(url, chainer)
    assert report.ok, report
    # the same registration re-signed without the key is refused
    forged = replica_signature(
        Chainer(None, scheme=1),
        str(replica_id),
        str(buffer_id),
        int(str(anchor_seq)),
        str(anchor_hash),
        int(str(legacy)),
    )
    execute(url, f"UPDATE audit_replicas SET signature = '{forged}'")
    assert not (await central_verify(url, chainer)).ok
