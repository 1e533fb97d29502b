"""Verify, purge and back up the central trail (each on a connection of its own).

* ``verify`` is in ``_pg_verify`` (re-exported here).
* ``purge`` drops whole monthly partitions older than the cutoff (a catalog
  change, where ``DELETE`` plus ``VACUUM`` rewrites and logs every row), then
  deletes the rest of the boundary month in small transactions. Every step
  first leaves a signed checkpoint per replica it touches, in the same
  transaction, so ``verify`` starts after the removed rows.

Backups are in ``_pg_backup``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql

from .._chain import GENESIS, Chainer
from ..exceptions import AuditStorageError
from ..maintenance import PurgeReport
from ._pg_verify import fetch_all, verify
from .sqlite import format_timestamp

__all__ = ["purge", "verify"]

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
_CHUNK = 5000
_LOCK_TRIES = 8
_LOCK_WAIT = "2s"

_PARTITIONS = """
SELECT n.nspname, c.relname,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = 'audit_logs'::regclass
"""
_DELETE_BATCH = """
DELETE FROM audit_logs
WHERE timestamp < %(cutoff)s AND (event_id, timestamp) IN (
    SELECT event_id, timestamp FROM audit_logs
    WHERE timestamp < %(cutoff)s ORDER BY timestamp LIMIT %(batch)s
)
RETURNING id, replica_id, seq, row_hash
"""


# ---------------------------------------------------------------------- purge


async def purge(
    conn: Connection, chainer: Chainer, cutoff: datetime, batch: int = _CHUNK
) -> PurgeReport:
    """Remove every row that started before ``cutoff``, leaving signed checkpoints."""
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=timezone.utc)
    marks: dict[str, int] = {
        rid: int(through)
        for rid, through in await fetch_all(
            conn, "SELECT replica_id, max(through_seq) FROM audit_checkpoints GROUP BY replica_id"
        )
    }
    deleted = batches = 0
    through_id: int | None = None
    partitions = sorted(
        (upper, schema, name)
        for schema, name, upper in await fetch_all(conn, _PARTITIONS)
        if upper is not None and upper <= cutoff
    )
    for _, schema, name in partitions:
        groups = await _drop_partition(conn, chainer, marks, schema, name)
        for _, _, count, top_id in groups:
            deleted += int(count)
            through_id = max(int(top_id), through_id or 0)
        batches += 1
    while True:
        async with conn.transaction():
            rows = await fetch_all(conn, _DELETE_BATCH, {"cutoff": cutoff, "batch": batch})
            tops: dict[str, tuple[int, str | None, int]] = {}
            for ident, rid, seq, row_hash in rows:
                top = tops.get(rid)
                if top is None or seq > top[0]:
                    tops[rid] = (int(seq), row_hash, (top[2] if top else 0) + 1)
                else:
                    tops[rid] = (top[0], top[1], top[2] + 1)
                through_id = max(int(ident), through_id or 0)
            for rid, (seq, row_hash, count) in tops.items():
                await _checkpoint(conn, chainer, marks, rid, seq, row_hash, count)
        if not rows:
            break
        deleted += len(rows)
        batches += 1
        await asyncio.sleep(0.005)  # let forwarders in between batches
    return PurgeReport(rows_deleted=deleted, through_id=through_id, batches=batches)


async def _drop_partition(
    conn: Connection, chainer: Chainer, marks: dict[str, int], schema: str, name: str
) -> list[tuple[Any, ...]]:
    """Checkpoint each replica in one old partition, then drop it; its rows per replica.

    The rows are counted without a lock; then, holding ``audit_logs`` exclusively
    for milliseconds (no insert can land meanwhile), the partition's highest id
    proves nothing arrived since, and the checkpoints and the ``DROP`` commit
    together. A lock not granted within ``_LOCK_WAIT`` (a backup or a long query
    holds the table) is retried, so readers never queue behind us for long.
    """
    table = sql.Identifier(schema, name)
    stats = sql.SQL(
        "SELECT replica_id, max(seq), count(*), max(id) FROM {} GROUP BY replica_id"
    ).format(table)
    last_hash = sql.SQL("SELECT row_hash FROM {} WHERE replica_id = %s AND seq = %s").format(table)
    for attempt in range(_LOCK_TRIES):
        groups = await fetch_all(conn, stats)
        top_id = max((int(g[3]) for g in groups), default=None)
        trial = dict(marks)  # a rolled-back attempt must not count as checkpointed
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_WAIT}'")
                await conn.execute("LOCK TABLE ONLY audit_logs IN ACCESS EXCLUSIVE MODE")
                now = await fetch_all(conn, sql.SQL("SELECT max(id) FROM {}").format(table))
                if now[0][0] != top_id:
                    raise psycopg.Rollback()  # rows arrived since they were counted
                for rid, top_seq, count, _ in groups:
                    found = await fetch_all(conn, last_hash, (rid, top_seq))
                    row_hash = found[0][0] if found else None
                    await _checkpoint(conn, chainer, trial, rid, int(top_seq), row_hash, int(count))
                await conn.execute(sql.SQL("DROP TABLE {}").format(table))
            marks.update(trial)
            return groups
        except psycopg.errors.LockNotAvailable:
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
    raise AuditStorageError(
        f"could not drop the old partition {name}: audit_logs stayed locked by other "
        "sessions (a backup or a long query); run the purge again later"
    )


async def _checkpoint(
    conn: Connection,
    chainer: Chainer,
    marks: dict[str, int],
    replica_id: str,
    through: int,
    last_hash: str | None,
    count: int,
) -> None:
    """A signed checkpoint at ``through`` unless the replica already has a later one."""
    if through <= marks.get(replica_id, -1):
        return
    marks[replica_id] = through
    created = datetime.now(timezone.utc)
    last_hash = last_hash or GENESIS
    signature = chainer.checkpoint_signature(through, last_hash, count, format_timestamp(created))
    await conn.execute(
        "INSERT INTO audit_checkpoints (replica_id, created_at, through_seq, last_hash, "
        "rows_purged, signature) VALUES (%s, %s, %s, %s, %s, %s)",
        (replica_id, created, through, last_hash, count, signature),
    )
