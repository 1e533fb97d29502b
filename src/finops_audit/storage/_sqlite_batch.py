"""One batch, one transaction, one plain function, on the writer's own thread.

Why: through aiosqlite every statement is a thread hop that wakes two threads
(about 80 µs round trip). A batch used to make four (``BEGIN IMMEDIATE``, the
chain-tail ``SELECT``, ``executemany``, ``COMMIT``) and two more for an
anchor. :func:`write_batch` is the whole transaction as one synchronous
function over a plain ``sqlite3.Connection``: begin, read the chain's tail
under the write lock, link, insert, commit, roll back on any failure, then
decide on and append an anchor.

The store calls it directly on the writer's loop thread, which owns the
connection (opened, prepared, written, anchored and closed there, never from
another thread): no hop at all. Measured on the 2-core machine (medians,
each against a baseline in the same run), per batch of 52 rows with
``benchmarks/writer_breakdown.py --batches``: four hops cost 1.68x the CPU
of raw ``sqlite3`` writing the same rows, with 18.3 context switches a batch
(raw: 4.8); one hop into aiosqlite's thread 1.48x and 6.9; this function
called directly 1.25x and 4.7 (1.05x with the chain off). At 1,000 calls a
second, caller and writer together: 56 / 53 µs a call (sync / async) with
four hops, 45 / 49 with one, 44 / 40 with none; extra context switches a
second 413 / 351, 137 / 162, 55 / 55. The price is that
the writer's loop waits for the transaction (an fsync, about 0.2-2 ms; up to
``busy_timeout`` behind another process's write lock); nothing on that loop
needs it sooner: callers hand off without it and flush waiters wait for that
very commit; only a query run on the writer's loop waits for the batch in
progress. Readers keep their aiosqlite connections.

A batch has no ``await`` inside its transaction, so cancelling the writer's
task cannot split one, and the fork gate (:mod:`finops_audit._forkgate`) the
caller holds covers it whole.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from .._anchors import AnchorLog
from .._chain import GENESIS, Chainer
from .base import CALLER_COLUMNS, Row

__all__ = ["ROW_WIDTH", "append_anchor", "chain_tail", "rollback_quietly", "write_batch"]

logger = logging.getLogger("finops_audit")

# Every row gets a random 128-bit event id from SQLite itself (no Python cost):
# the fleet-wide identity a forwarder deduplicates on.
EVENT_ID = "lower(hex(randomblob(16)))"
ROW_COLUMNS = (
    "timestamp, tool_name, parameters, status, error_message, execution_time_ms, "
    + ", ".join(CALLER_COLUMNS)
)
#: Columns of a row the writer hands over; a 16th, when present, is its event id.
ROW_WIDTH = 6 + len(CALLER_COLUMNS)
NO_CALLER = (None,) * len(CALLER_COLUMNS)

INSERT_ROW = (
    f"INSERT INTO audit_logs ({ROW_COLUMNS}, event_id) VALUES ({', '.join('?' * 15)}, {EVENT_ID})"
)
INSERT_CHAINED = (
    f"INSERT INTO audit_logs (id, {ROW_COLUMNS}, row_hash, event_id) "
    f"VALUES ({', '.join('?' * 17)}, {EVENT_ID})"
)
# Rows without a caller (the common case outside MCP) bind six values, not
# fifteen: binding a None costs about 0.3 µs in sqlite3, literal NULLs nothing.
_NULLS = ", ".join("NULL" for _ in CALLER_COLUMNS)
INSERT_BARE = (
    f"INSERT INTO audit_logs ({ROW_COLUMNS}, event_id) "
    f"VALUES (?, ?, ?, ?, ?, ?, {_NULLS}, {EVENT_ID})"
)
INSERT_BARE_CHAINED = (
    f"INSERT INTO audit_logs (id, {ROW_COLUMNS}, row_hash, event_id) "
    f"VALUES (?, ?, ?, ?, ?, ?, ?, {_NULLS}, ?, {EVENT_ID})"
)
INSERT_WITH_ID = f"INSERT INTO audit_logs ({ROW_COLUMNS}, event_id) VALUES ({', '.join('?' * 16)})"
INSERT_CHAINED_WITH_ID = (
    f"INSERT INTO audit_logs (id, {ROW_COLUMNS}, row_hash, event_id) VALUES ({', '.join('?' * 18)})"
)
# The chain's tail, read under the write lock: last id ever given, its hash (if
# the row still exists) and, if it was purged, the checkpoint's hash.
CHAIN_TAIL = """
SELECT s.seq,
       EXISTS (SELECT 1 FROM audit_logs WHERE id = s.seq),
       (SELECT row_hash FROM audit_logs WHERE id = s.seq),
       (SELECT last_hash FROM audit_checkpoints WHERE through_id = s.seq
        ORDER BY id DESC LIMIT 1)
FROM sqlite_sequence AS s WHERE s.name = 'audit_logs'
"""
# One statement, so one snapshot: the last row, its hash and the row count.
ANCHOR_STATE = (
    "SELECT (SELECT id FROM audit_logs ORDER BY id DESC LIMIT 1), "
    "(SELECT row_hash FROM audit_logs ORDER BY id DESC LIMIT 1), "
    "(SELECT COUNT(*) FROM audit_logs)"
)


def write_batch(
    conn: sqlite3.Connection,
    rows: Sequence[Row],
    chainer: Chainer | None,
    anchors: AnchorLog | None,
) -> None:
    """Store ``rows`` in one transaction; then append an anchor if one is due.

    Any failure rolls the transaction back and propagates (the store then
    drops the connection). An anchor that cannot be read or written is logged
    and never fails the batch: its rows are committed.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if rows and max(map(len, rows)) > ROW_WIDTH:
            # the writer chose the event ids (field encryption is bound to them)
            _insert_with_ids(conn, rows, chainer)
        elif chainer is None:
            _insert_unchained(conn, rows)
        else:
            last_id, prev = chain_tail(conn.execute(CHAIN_TAIL).fetchone())
            full, bare, _ = chainer.link_split(last_id + 1, prev, rows)
            # ids are explicit, so the two statements may run in either order
            if full:
                conn.executemany(INSERT_CHAINED, full)
            if bare:
                conn.executemany(INSERT_BARE_CHAINED, bare)
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise
    if anchors is not None and anchors.committed():
        append_anchor(conn, anchors)


def _insert_unchained(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    # consecutive runs of rows with and without a caller keep ids in submission order
    for is_bare, run in itertools.groupby(rows, key=lambda r: r[6:] == NO_CALLER):
        if is_bare:
            conn.executemany(INSERT_BARE, [r[:6] for r in run])
        else:
            conn.executemany(INSERT_ROW, list(run))


def _insert_with_ids(
    conn: sqlite3.Connection, rows: Sequence[Row], chainer: Chainer | None
) -> None:
    """Insert rows whose 16th value is their event id (chained over the first 15)."""
    full = [r if len(r) > ROW_WIDTH else (*r, os.urandom(16).hex()) for r in rows]
    if chainer is None:
        conn.executemany(INSERT_WITH_ID, [r[: ROW_WIDTH + 1] for r in full])
        return
    last_id, prev = chain_tail(conn.execute(CHAIN_TAIL).fetchone())
    linked, _ = chainer.link(last_id + 1, prev, [r[:ROW_WIDTH] for r in full])
    conn.executemany(
        INSERT_CHAINED_WITH_ID,
        [(*link, r[ROW_WIDTH]) for link, r in zip(linked, full, strict=True)],
    )


def chain_tail(row: Any) -> tuple[int, str]:
    """Last id ever given and the hash the next row chains to (:data:`CHAIN_TAIL`'s row)."""
    if row is None:
        return 0, GENESIS
    seq, exists, row_hash, checkpoint_hash = row
    if exists:
        return int(seq), row_hash or GENESIS
    return int(seq), checkpoint_hash or GENESIS


def rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back a transaction in progress; a failure to do so is only logged (the
    connection is dropped next), so the error that caused it is the one raised."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except Exception:
        logger.debug("rolling back a failed audit batch", exc_info=True)


def append_anchor(conn: sqlite3.Connection, anchors: AnchorLog) -> None:
    """Append an anchor of the trail's end, read in one snapshot (writer side only)."""
    try:
        last_id, last_hash, count = conn.execute(ANCHOR_STATE).fetchone()
    except sqlite3.Error as exc:
        logger.warning("finops_audit could not read the trail's end for an anchor: %s", exc)
        return
    if last_id is None or last_hash is None:
        return  # nothing chained to anchor
    anchors.append(int(last_id), str(last_hash), int(count))
