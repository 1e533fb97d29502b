"""Verify, purge and back up a SQLite trail (run on the writer's event loop).

Each operation uses its own connection, so it never interleaves with the
writer's batch transactions; purges delete in small batches, each its own
short transaction, so running writers wait milliseconds, not seconds.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite

from .._anchors import Anchor, check_anchors
from .._atomic import atomic_path
from .._chain import GENESIS, Chainer
from ..exceptions import AuditStorageError
from ..maintenance import BackupReport, PurgeReport, VerifyReport
from . import _sqlite_meta as meta_sql
from ._sqlite_trail import companions_exist, open_trail_readonly, tidy_companions
from .base import CALLER_COLUMNS

__all__ = ["backup", "purge", "verify"]

_CHUNK = 5000
_ROW = (
    "SELECT id, timestamp, tool_name, parameters, status, error_message, execution_time_ms, "
    + ", ".join(CALLER_COLUMNS)
    + ", row_hash FROM audit_logs WHERE id > ? ORDER BY id LIMIT ?"
)
_HASH = 16  # index of row_hash in _ROW


async def verify(
    conn: aiosqlite.Connection,
    chainer: Chainer,
    anchors: Sequence[Anchor] = (),
    anchor_source: str = "",  # pragma: no mutate
) -> VerifyReport:
    """Walk every row in id order and recompute its hash; stop at the first break.

    Before the rows: the signed meta (key scheme, pre-chain marker) and every
    purge checkpoint must match their signatures. After them: every anchor
    (already read and checked by the caller) must still hold.
    """
    meta = await meta_sql.read_meta(conn, chainer)
    chainer = meta.chainer  # the trail's own key scheme from here on
    keyed = chainer.keyed
    if meta.problem is not None:
        return VerifyReport(
            ok=False, rows_checked=0, first_bad_id=1, keyed=keyed, problem=meta.problem
        )
    checkpoints: dict[int, tuple[str, str, int, str]] = {}
    for cp_id, through_id, cp_hash, cp_sig, cp_purged, cp_created in await conn.execute_fetchall(
        "SELECT id, through_id, last_hash, signature, rows_purged, created_at "  # pragma: no mutate
        "FROM audit_checkpoints ORDER BY id"  # pragma: no mutate
    ):
        if (
            chainer.checkpoint_signature(int(through_id), cp_hash, int(cp_purged), cp_created)
            != cp_sig
        ):
            return VerifyReport(
                ok=False,
                rows_checked=0,
                first_bad_id=int(through_id) + 1,
                keyed=keyed,
                problem=f"the purge checkpoint #{cp_id} through id {through_id} does not "
                "match its signature",
            )
        checkpoints[int(through_id)] = (cp_hash, cp_sig, int(cp_purged), cp_created)

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

    legacy_through = meta.legacy_through
    wanted = {a.last_id for a in anchors}
    hashes: dict[int, str | None] = {}
    first_id: int | None = None  # pragma: no mutate
    checked = legacy = 0
    prev_id: int | None = None
    prev_hash = GENESIS
    chained = False  # pragma: no mutate
    through: int | None = None
    after = 0
    while True:
        rows: list[Any] = list(await conn.execute_fetchall(_ROW, (after, _CHUNK)))
        if not rows:
            break
        for row in rows:
            row_id = int(row[0])
            row_hash = row[_HASH]
            if row_id in wanted:
                hashes[row_id] = row_hash
            if prev_id is None:
                first_id = row_id
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
                last_hash = cp[0]
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
    # everything may have been purged: the latest checkpoint then covers the anchors
    purged = through if prev_id is not None else max(checkpoints, default=None)
    found = check_anchors(
        anchors,
        anchor_source,
        hashes,
        first_id,
        prev_id,
        purged,
        checkpoints[purged][0] if purged is not None else None,
    )
    if found is not None:
        return bad(found[0], found[1], checked, legacy, through)
    return VerifyReport(
        ok=True,
        rows_checked=checked,
        legacy_rows=legacy,
        checkpoint_through_id=through,
        keyed=keyed,
        anchors_checked=len(anchors),
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

    The whole purge runs in a worker thread, each of its transactions begun
    and ended there: it often runs on the writer's loop, whose batches wait
    for the write lock *on* that loop (``_sqlite_batch``), so a transaction
    that needed the loop to reach its COMMIT would stall both for busy_timeout.
    """
    job = functools.partial(_purge, path, busy_ms, chainer, cutoff_text, batch, max_id)
    try:
        done = asyncio.get_running_loop().run_in_executor(None, job)
    except RuntimeError:  # the interpreter is exiting: no new threads; run it here
        return job()
    return await done


def _purge(
    path: Path,
    busy_ms: int,
    chainer: Chainer,
    cutoff_text: str,
    batch: int,
    max_id: int | None,
) -> PurgeReport:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # pragma: no mutate
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        # checkpoints are signed under the trail's own key scheme
        chainer = chainer.for_scheme(meta_sql.writing_scheme(conn))
        (first_kept,) = conn.execute(
            "SELECT MIN(id) FROM audit_logs WHERE timestamp >= ?",  # pragma: no mutate
            (cutoff_text,),
        ).fetchone()
        if first_kept is None:
            (upto,) = conn.execute("SELECT MAX(id) FROM audit_logs").fetchone()  # pragma: no mutate
        else:
            upto = int(first_kept) - 1
        if max_id is not None and upto is not None:
            upto = min(int(upto), max_id)
        deleted = batches = 0
        through: int | None = None
        while upto is not None:
            conn.execute("BEGIN IMMEDIATE")  # pragma: no mutate
            try:
                hi, count = conn.execute(
                    "SELECT MAX(id), COUNT(*) FROM "  # pragma: no mutate
                    "(SELECT id FROM audit_logs WHERE id <= ? ORDER BY id LIMIT ?)",
                    (upto, batch),
                ).fetchone()
                if not count:
                    conn.execute("ROLLBACK")
                    break
                (last_hash,) = conn.execute(
                    "SELECT row_hash FROM audit_logs WHERE id = ?",  # pragma: no mutate
                    (hi,),
                ).fetchone()
                conn.execute("DELETE FROM audit_logs WHERE id <= ?", (hi,))  # pragma: no mutate
                created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
                last_hash = last_hash or GENESIS
                signature = chainer.checkpoint_signature(int(hi), last_hash, int(count), created)
                conn.execute(
                    "INSERT INTO audit_checkpoints (created_at, through_id, last_hash, "
                    "rows_purged, signature) VALUES (?, ?, ?, ?, ?)",  # pragma: no mutate
                    (created, hi, last_hash, count, signature),
                )
                conn.execute("COMMIT")  # pragma: no mutate
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            deleted += int(count)
            batches += 1
            through = int(hi)
            time.sleep(0.005)  # let writers in between batches  # pragma: no mutate
        return PurgeReport(rows_deleted=deleted, through_id=through, batches=batches)
    finally:
        conn.close()


def _first_missing(checkpoints: dict[int, Any], first_present: int) -> int:
    """The first id that should be there: after the last checkpoint below it, else 1."""
    below = [through for through in checkpoints if through < first_present]
    return max(below) + 1 if below else 1


def backup(path: Path, dest: Path, known: int, busy_ms: int = 5000) -> BackupReport:
    """Consistent online copy with the SQLite backup API, at ``dest`` (0600) or not at all.

    The source is opened read-only (and must be a trail of schema ``known`` or
    older); the copy is written to a temporary file beside ``dest`` and renamed
    once complete, so a failure (full disk, unwritable folder, interruption)
    leaves nothing at ``dest`` and the retry can use the same name.
    """
    if os.path.lexists(dest):
        raise AuditStorageError(f"backup destination {dest} already exists")
    had_companions = companions_exist(path)
    folder = dest.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file (not DEST) stands where a folder must be
        raise AuditStorageError(f"cannot write backup {dest}: {folder} is not a folder") from None
    except OSError as exc:
        raise AuditStorageError(f"cannot write backup {dest}: {exc.strerror or exc}") from exc
    try:
        with atomic_path(dest, overwrite=False) as tmp:
            src = open_trail_readonly(path, known=known, busy_ms=busy_ms)
            try:
                dst = sqlite3.connect(tmp)
                try:
                    src.backup(dst)
                    rows = int(dst.execute("SELECT COUNT(*) FROM main.audit_logs").fetchone()[0])
                finally:
                    dst.close()
            finally:
                src.close()
                if not had_companions:
                    tidy_companions(path)
    except FileExistsError:
        raise AuditStorageError(f"backup destination {dest} already exists") from None
    except (OSError, sqlite3.Error) as exc:
        if isinstance(exc, AuditStorageError):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise AuditStorageError(f"cannot write backup {dest}: {reason}") from exc
    return BackupReport(path=dest, bytes=dest.stat().st_size, rows=rows)
