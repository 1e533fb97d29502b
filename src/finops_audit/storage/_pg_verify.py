"""Verify the central trail: every replica's chain, registration and delivery anchor.

``verify`` walks every replica's chain by ``(replica_id, seq)`` from its
signed registration or its latest signed purge checkpoint, inside one
``REPEATABLE READ`` snapshot, streaming rows through a server-side cursor,
under the key scheme its signed registration names; then it checks the
replica's signed delivery anchor (``audit_anchors``, written by the sink with
each batch): the newest delivered row must still be there, unchanged, unless
a signed checkpoint purged it. So deleting a replica's newest rows centrally,
which the chain alone cannot show, fails verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from .._chain import GENESIS, Chainer
from .._encoding import decode_parameters
from ..forwarding._pg_rows import CHAIN_COLUMNS, chain_fields, jsonb_input
from ..forwarding.postgres import central_anchor_signature, replica_signature
from ..maintenance import VerifyReport
from .sqlite import format_timestamp

__all__ = ["fetch_all", "verify"]

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
_CHUNK = 5000
# The chain's columns as the sink stores them (_pg_rows.CHAIN_COLUMNS), read by name.
_WALK = (
    f"SELECT id, seq, row_hash, parameters::text, {', '.join(CHAIN_COLUMNS)} FROM audit_logs "
    "WHERE replica_id = %s AND seq > %s ORDER BY seq, id"
)
# Distinct replica ids through the (replica_id, seq) index, one probe each.
_PRESENT_REPLICAS = """
WITH RECURSIVE r AS (
    (SELECT replica_id FROM audit_logs ORDER BY replica_id LIMIT 1)
    UNION ALL
    SELECT (SELECT replica_id FROM audit_logs WHERE replica_id > r.replica_id
            ORDER BY replica_id LIMIT 1)
    FROM r WHERE r.replica_id IS NOT NULL
)
SELECT replica_id FROM r WHERE replica_id IS NOT NULL
"""


@dataclass
class _Replica:
    replica_id: str
    buffer_id: str
    anchor_seq: int
    anchor_hash: str
    legacy_through: int
    signature: str


@dataclass
class _Anchor:
    last_seq: int
    last_hash: str
    created_at: str
    signature: str


@dataclass
class _Checkpoint:
    through: int
    last_hash: str
    rows_purged: int
    created: datetime
    signature: str


@dataclass
class _Outcome:
    checked: int = 0
    legacy: int = 0
    through: int | None = None
    bad_id: int | None = None
    problem: str | None = None
    anchor_row: tuple[int, str] | None = None  # (central id, row hash) at the anchor's seq


# ---------------------------------------------------------------------- verify


async def verify(conn: Connection, chainer: Chainer) -> VerifyReport:
    """Walk every replica's chain; ``ok`` is false where any of them breaks.

    ``first_bad_id`` is the central id of the earliest bad row found (for
    missing rows: the row found in their place) and ``problem`` names the
    replica. ``checkpoint_through_id`` is the highest checkpoint ``seq`` used.
    """
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    await conn.set_read_only(True)
    async with conn.transaction():
        replicas = [
            _Replica(*row)
            for row in await fetch_all(
                conn,
                "SELECT replica_id, buffer_id, anchor_seq, anchor_hash, legacy_through, "
                "signature FROM audit_replicas ORDER BY replica_id",
            )
        ]
        checkpoints = {
            row[0]: _Checkpoint(*row[1:])
            for row in await fetch_all(
                conn,
                "SELECT DISTINCT ON (replica_id) replica_id, through_seq, last_hash, "
                "rows_purged, created_at, signature FROM audit_checkpoints "
                "ORDER BY replica_id, through_seq DESC, id DESC",
            )
        }
        # a central store no forwarder of this version has written to has no anchors yet
        ((has_anchors,),) = await fetch_all(conn, "SELECT to_regclass('audit_anchors') IS NOT NULL")
        anchors = {
            row[0]: _Anchor(*row[1:])
            for row in (
                await fetch_all(
                    conn,
                    "SELECT replica_id, last_seq, last_hash, created_at, signature "
                    "FROM audit_anchors ORDER BY replica_id",
                )
                if has_anchors
                else []
            )
        }
        outcomes: list[tuple[str, _Outcome]] = []
        for replica in replicas:
            cp = checkpoints.get(replica.replica_id)
            anchor = anchors.get(replica.replica_id)
            outcome = await _walk(conn, chainer, replica, cp, anchor)
            outcomes.append((replica.replica_id, outcome))
        known = {r.replica_id for r in replicas}
        for replica_id in sorted(set(anchors) - known):
            gone = _Outcome(
                problem="has a delivery anchor but no registration: the replica's "
                "registration (and its rows) were deleted"
            )
            outcomes.append((replica_id, gone))
        for (replica_id,) in await fetch_all(conn, _PRESENT_REPLICAS):
            if replica_id not in known:
                first = await _first_id(conn, replica_id)
                stray = _Outcome(
                    bad_id=first,
                    problem="has rows but no registration (anchor): its chain cannot be "
                    "checked; rows were inserted under an unknown replica id",
                )
                outcomes.append((replica_id, stray))
    return _report(outcomes, chainer.keyed)


def _report(outcomes: list[tuple[str, _Outcome]], keyed: bool) -> VerifyReport:
    checked = sum(o.checked for _, o in outcomes)
    legacy = sum(o.legacy for _, o in outcomes)
    throughs = [o.through for _, o in outcomes if o.through is not None]
    through = max(throughs) if throughs else None
    bad = [(rid, o) for rid, o in outcomes if o.problem is not None]
    if not bad:
        return VerifyReport(
            ok=True,
            rows_checked=checked,
            legacy_rows=legacy,
            checkpoint_through_id=through,
            keyed=keyed,
        )
    bad.sort(key=lambda item: (item[1].bad_id is None, item[1].bad_id or 0))
    first_rid, first = bad[0]
    problem = f"replica {first_rid!r}: {first.problem}"
    if len(bad) > 1:
        others = ", ".join(repr(rid) for rid, _ in bad[1:])
        problem += f" (the chains of {others} are broken too)"
    return VerifyReport(
        ok=False,
        rows_checked=checked,
        legacy_rows=legacy,
        checkpoint_through_id=through,
        first_bad_id=first.bad_id,
        problem=problem,
        keyed=keyed,
    )


def _registered_scheme(chainer: Chainer, replica: _Replica) -> tuple[int, bool] | None:
    """The key scheme of a replica's rows, and whether it must have a delivery anchor,
    from whichever registration form its signature matches (None: none does)."""
    fields = (
        replica.replica_id,
        replica.buffer_id,
        replica.anchor_seq,
        replica.anchor_hash,
        replica.legacy_through,
    )
    for row_scheme in (2, 1):  # registered since key scheme 2: the scheme is signed
        if replica_signature(chainer, *fields, row_scheme=row_scheme) == replica.signature:
            return row_scheme, True
    if replica_signature(chainer.for_scheme(1), *fields) == replica.signature:
        return 1, False  # registered by a version before anchors
    return None


async def _walk(
    conn: Connection,
    chainer: Chainer,
    replica: _Replica,
    cp: _Checkpoint | None,
    anchor: _Anchor | None = None,
) -> _Outcome:
    out = _Outcome()
    rid = replica.replica_id
    registered = _registered_scheme(chainer, replica)
    if registered is None:
        out.bad_id = await _first_id(conn, rid)
        out.problem = (
            "its registration (anchor) does not match its signature: the key is wrong "
            "(check AUDIT_HMAC_KEY) or the record was altered"
        )
        return out
    row_scheme, anchored = registered
    if (
        anchor is not None
        and central_anchor_signature(
            chainer, rid, anchor.last_seq, anchor.last_hash, anchor.created_at
        )
        != anchor.signature
    ):
        out.bad_id = await _first_id(conn, rid)
        out.problem = (
            "its delivery anchor does not match its signature: the key is wrong "
            "(check AUDIT_HMAC_KEY) or the anchor was altered"
        )
        return out
    if anchor is None and anchored:
        out.bad_id = await _first_id(conn, rid)
        out.problem = "its delivery anchor is missing: it was deleted"
        return out
    signer = chainer
    chainer = chainer.for_scheme(row_scheme)
    start, prev = replica.anchor_seq, replica.anchor_hash
    if cp is not None and cp.through >= start:
        created = format_timestamp(cp.created)
        signed = (cp.through, cp.last_hash, cp.rows_purged, created)
        # checkpoints are signed by the purge's own (current) scheme, older ones by scheme 1
        if cp.signature not in (
            signer.checkpoint_signature(*signed),
            signer.for_scheme(1).checkpoint_signature(*signed),
        ):
            out.bad_id = await _first_id(conn, rid)
            out.problem = (
                f"the purge checkpoint through seq {cp.through} does not match its signature"
            )
            return out
        start, prev = cp.through, cp.last_hash
        out.through = cp.through
    chained = prev != GENESIS
    expected = start + 1
    row_hash_of, fields_of = chainer.row_hash, chain_fields
    async with conn.cursor(name="finops_audit_verify") as cur:
        cur.itersize = _CHUNK
        await cur.execute(_WALK, (rid, start))
        async for row in cur:
            ident, seq, row_hash, jsonb_text = row[:4]
            if seq != expected:
                out.bad_id = ident
                if seq < expected:
                    out.problem = f"seq {seq} appears twice: a row was inserted"
                elif expected == start + 1:
                    out.problem = (
                        f"rows {expected}..{seq - 1} are missing and no purge checkpoint "
                        "accounts for them"
                    )
                else:
                    out.problem = f"rows {expected}..{seq - 1} are missing (deleted)"
                return out
            if row_hash is None:
                if chained or seq > replica.legacy_through:
                    out.bad_id = ident
                    out.problem = (
                        f"row seq {seq} has no hash inside the chain (its hash was removed)"
                    )
                    return out
                out.legacy += 1
                prev = GENESIS
            else:
                fields = fields_of(row[4:])
                if row_hash_of(seq, fields, prev) != row_hash:
                    out.bad_id = ident
                    out.problem = (
                        f"row seq {seq} does not match its hash: it was modified, inserted "
                        "or moved"
                        + (
                            " (or the key is wrong: check AUDIT_HMAC_KEY)"
                            if out.checked == out.legacy
                            else ""
                        )
                    )
                    return out
                if not _same_parameters(fields[2], jsonb_text):
                    out.bad_id = ident
                    out.problem = (
                        f"row seq {seq}: its parameters (jsonb) differ from the text its "
                        "hash covers: the parameters column was edited"
                    )
                    return out
                chained = True
                prev = row_hash
            if anchor is not None and seq == anchor.last_seq:
                out.anchor_row = (ident, row_hash or "")
            out.checked += 1
            expected += 1
    if anchor is not None:
        _check_anchor(out, anchor, expected - 1, cp.through if cp is not None else None)
    return out


def _check_anchor(out: _Outcome, anchor: _Anchor, top: int, purged: int | None) -> None:
    """The replica's newest delivered row must still be there, unchanged (or purged)."""
    if purged is not None and anchor.last_seq <= purged:
        return
    if out.anchor_row is None:
        out.problem = (
            f"its newest rows were deleted: seq {top + 1}..{anchor.last_seq} (at least) "
            f"are gone (delivery anchor of {anchor.created_at})"
        )
    elif out.anchor_row[1] != anchor.last_hash:
        out.bad_id = out.anchor_row[0]
        out.problem = (
            f"row seq {anchor.last_seq} differs from its delivery anchor of "
            f"{anchor.created_at}: the chain was rebuilt"
        )


def _same_parameters(text: str | None, jsonb_text: str) -> bool:
    """Whether the ``jsonb`` column still holds what the chained text says.

    Compared as parsed values: ``jsonb`` reorders keys and respells numbers.
    Text ``jsonb`` cannot hold as is (``\\u0000``, invalid JSON) is compared
    with what the sink stores for it.
    """
    if text is None:
        return True  # the hash check has already failed for such a row
    expected = jsonb_input(text)
    return decode_parameters(expected) == decode_parameters(jsonb_text)


async def fetch_all(
    conn: Connection, query: str | sql.Composed, params: Sequence[Any] | dict[str, Any] = ()
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def _first_id(conn: Connection, replica_id: str) -> int | None:
    rows = await fetch_all(
        conn, "SELECT min(id) FROM audit_logs WHERE replica_id = %s", (replica_id,)
    )
    return None if not rows or rows[0][0] is None else int(rows[0][0])
