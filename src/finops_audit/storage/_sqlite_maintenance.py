"""Verify, purge and back up a SQLite trail (run on the writer's event loop).

Each operation uses its own connection, so it never interleaves with the
writer's batch transactions; purges delete in small batches, each its own
short transaction, so running writers wait milliseconds, not seconds.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite

from .._chain import GENESIS, Chainer
from ..exceptions import AuditStorageError
from ..maintenance import BackupReport, PurgeReport, VerifyReport
from .base import CALLER_COLUMNS

__all__ = ["backup", "purge", "verify"]

_CHUNK = 5000
_ROW = (
    "SELECT id, timestamp, tool_name, parameters, status, error_message, execution_time_ms, "
    + ", ".join(CALLER_COLUMNS)
    + ", row_hash FROM audit_logs WHERE id > ? ORDER BY id LIMIT ?"
)
_HASH = 16  # index of row_hash in _ROW


async def verify(conn: aiosqlite.Connection, chainer: Chainer) -> VerifyReport:
    """Walk every row in id order and recompute its hash; stop at the first break."""
    checkpoints: dict[int, tuple[str, str, int, str]] = {}
    for cp_id, cp_hash, cp_sig, cp_purged, cp_created in await conn.execute_fetchall(
        "SELECT through_id, last_hash, signature, rows_purged, created_at "
        "FROM audit_checkpoints ORDER BY id"
    ):
        checkpoints[int(cp_id)] = (cp_hash, cp_sig, int(cp_purged), cp_created)
    keyed = chainer.keyed

    def bad(
        row_id: int | None, problem: str, checked: int, legacy: int, through: int | None
    ) -> VerifyReport:
        return VerifyReport(
            ok=False,
            rows_checked=checked,
            legacy_rows=legacy,
            checkpoint_through_id=through,
            first_bad_id=row_id,
            problem=problem,
            keyed=keyed,
        )

    legacy_through: int | None = None
    for key, value, signature in await conn.execute_fetchall(
        "SELECT key, value, signature FROM audit_meta WHERE key = 'legacy_through'"
    ):
        if chainer.meta_signature(key, value) != signature:
            return VerifyReport(
                ok=False,
                rows_checked=0,
                first_bad_id=1,
                keyed=keyed,
                problem="the trail's signed record does not match: the key is wrong "
                "(check AUDIT_HMAC_KEY) or the record was altered",
            )
        legacy_through = int(value)
    checked = legacy = 0
    prev_id: int | None = None
    prev_hash = GENESIS
    chained = False
    through: int | None = None
    after = 0
    while True:
        rows: list[Any] = list(await conn.execute_fetchall(_ROW, (after, _CHUNK)))
        if not rows:
            break
        for row in rows:
            row_id = int(row[0])
            row_hash = row[_HASH]
            if prev_id is None and row_id != 1:
                cp = checkpoints.get(row_id - 1)
                if cp is None:
                    return bad(
                        _first_missing(checkpoints, row_id),
                        f"rows 1..{row_id - 1} are missing and no purge "
                        "checkpoint accounts for them",
                        checked,
                        legacy,
                        None,
                    )
                last_hash, signature, purged, created = cp
                if (
                    chainer.checkpoint_signature(row_id - 1, last_hash, purged, created)
                    != signature
                ):
                    return bad(
                        row_id,
                        f"the purge checkpoint through id {row_id - 1} "
                        "does not match its signature",
                        checked,
                        legacy,
                        row_id - 1,
                    )
                through = row_id - 1
                prev_hash = last_hash
                chained = last_hash != GENESIS
            elif prev_id is not None and row_id != prev_id + 1:
                return bad(
                    prev_id + 1,
                    f"rows {prev_id + 1}..{row_id - 1} are missing (deleted)",
                    checked,
                    legacy,
                    through,
                )
            if row_hash is None:
                if chained or (legacy_through is not None and row_id > legacy_through):
                    return bad(
                        row_id,
                        f"row {row_id} has no hash inside the chain (its hash was removed)",
                        checked,
                        legacy,
                        through,
                    )
                legacy += 1
                prev_hash = GENESIS
            else:
                expected = chainer.row_hash(row_id, row[1:_HASH], prev_hash)
                if expected != row_hash:
                    return bad(
                        row_id,
                        f"row {row_id} does not match its hash: it was "
                        "modified, inserted or moved"
                        + (
                            # the first chained row failing is what a wrong key looks like
                            " (or the key is wrong: check AUDIT_HMAC_KEY)"
                            if checked == legacy
                            else ""
                        ),
                        checked,
                        legacy,
                        through,
                    )
                chained = True
                prev_hash = row_hash
            prev_id = row_id
            checked += 1
        after = int(rows[-1][0])
    seq_rows = list(
        await conn.execute_fetchall("SELECT seq FROM sqlite_sequence WHERE name = 'audit_logs'")
    )
    seq = int(seq_rows[0][0]) if seq_rows else 0
    last = prev_id if prev_id is not None else 0
    if seq > last and not (prev_id is None and seq in checkpoints):
        return bad(
            last + 1,
            f"rows {last + 1}..{seq} were deleted from the end of the trail",
            checked,
            legacy,
            through,
        )
    return VerifyReport(
        ok=True,
        rows_checked=checked,
        legacy_rows=legacy,
        checkpoint_through_id=through,
        keyed=keyed,
    )


async def purge(
    path: Path,
    busy_ms: int,
    chainer: Chainer,
    cutoff_text: str,
    batch: int = _CHUNK,
    max_id: int | None = None,
) -> PurgeReport:
    """Delete the contiguous oldest rows that started before ``cutoff_text``.

    Only a contiguous prefix of ids is removed (rows up to the first one at or
    after the cutoff, and never above ``max_id``: a buffer keeps what is not
    yet forwarded), and each batch leaves a signed checkpoint with the hash of
    its last row, so the remaining trail still verifies from there.
    """
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        (first_kept,) = await _one(
            conn, "SELECT MIN(id) FROM audit_logs WHERE timestamp >= ?", (cutoff_text,)
        )
        if first_kept is None:
            (upto,) = await _one(conn, "SELECT MAX(id) FROM audit_logs", ())
        else:
            upto = int(first_kept) - 1
        if max_id is not None and upto is not None:
            upto = min(int(upto), max_id)
        deleted = batches = 0
        through: int | None = None
        while upto is not None:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                hi, count = await _one(
                    conn,
                    "SELECT MAX(id), COUNT(*) FROM "
                    "(SELECT id FROM audit_logs WHERE id <= ? ORDER BY id LIMIT ?)",
                    (upto, batch),
                )
                if not count:
                    await conn.rollback()
                    break
                (last_hash,) = await _one(
                    conn, "SELECT row_hash FROM audit_logs WHERE id = ?", (hi,)
                )
                await conn.execute("DELETE FROM audit_logs WHERE id <= ?", (hi,))
                created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
                last_hash = last_hash or GENESIS
                signature = chainer.checkpoint_signature(int(hi), last_hash, int(count), created)
                await conn.execute(
                    "INSERT INTO audit_checkpoints (created_at, through_id, last_hash, "
                    "rows_purged, signature) VALUES (?, ?, ?, ?, ?)",
                    (created, hi, last_hash, count, signature),
                )
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
            deleted += int(count)
            batches += 1
            through = int(hi)
            await asyncio.sleep(0.005)  # let writers in between batches
        return PurgeReport(rows_deleted=deleted, through_id=through, batches=batches)
    finally:
        await conn.close()


def _first_missing(checkpoints: dict[int, Any], first_present: int) -> int:
    """The first id that should be there: after the last checkpoint below it, else 1."""
    below = [through for through in checkpoints if through < first_present]
    return max(below) + 1 if below else 1


async def _one(conn: aiosqlite.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    rows = await conn.execute_fetchall(sql, params)
    return next(iter(rows))


def backup(path: Path, dest: Path) -> BackupReport:
    """Consistent online copy with the SQLite backup API; ``dest`` is created 0600."""
    if dest.exists():
        raise AuditStorageError(f"backup destination {dest} already exists")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise AuditStorageError(f"cannot create backup {dest}: {exc}") from exc
    os.close(fd)
    src = sqlite3.connect(path)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
            rows = int(dst.execute("SELECT COUNT(*) FROM audit_logs").fetchone()[0])
        finally:
            dst.close()
    finally:
        src.close()
    for suffix in ("-wal", "-shm"):
        companion = Path(f"{dest}{suffix}")
        if companion.exists():
            os.chmod(companion, 0o600)
    return BackupReport(path=dest, bytes=dest.stat().st_size, rows=rows)
