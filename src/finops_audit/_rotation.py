"""Key rotation of a local trail: re-wrap every data key that is not under the first key.

Why it is safe to interrupt (``kill -9`` included) and to run beside writers:

* Each batch of rows is one ``BEGIN IMMEDIATE`` transaction, so a batch is
  either all re-wrapped or untouched; a rerun picks up whatever still names an
  older key. Nothing else is remembered between runs.
* An update applies only if the row still holds the text that was read, so a
  concurrent rotation or purge never loses a value.
* Only each envelope's key id and wrapped data key change, never a ciphertext:
  the hash chain covers neither (:func:`finops_audit._envelope.chain_view`),
  so ``verify`` passes before, during and after.
* ``secure_delete`` overwrites the freed old wraps, and the WAL is truncated at
  the end, so the file stops holding data keys wrapped under a retired key.
  Backups made earlier still do: keep the old key for them, or re-make them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ._envelope import ERROR_PREFIX, OPENING
from ._fieldcrypt import FieldOpener, key_ids
from .storage._sqlite_trail import companions_exist, connect_readonly, tidy_companions

__all__ = ["KeyUsage", "RotationReport", "key_usage", "rotate_keys"]

_CANDIDATES = (
    "SELECT id, parameters, error_message FROM audit_logs WHERE id > ? AND "
    "(instr(parameters, ?) > 0 OR substr(error_message, 1, ?) = ?) ORDER BY id LIMIT ?"
)
_UPDATE = (
    "UPDATE audit_logs SET parameters = ?, error_message = ? "
    "WHERE id = ? AND parameters = ? AND error_message IS ?"
)


class RotationReport(BaseModel):
    """What one ``rotate-keys`` run did.

    ``rows_rotated`` rows now name the first key; ``unreadable`` rows name a
    key that is not in the keyring (or whose data key does not open) and were
    left as they are; ``batches`` transactions were committed.
    """

    model_config = ConfigDict(frozen=True)

    key_id: str
    rows_rotated: int
    rows_checked: int
    unreadable: int
    batches: int


class KeyUsage(BaseModel):
    """Rows per key id (``rotate-keys --status``): a key may leave the keyring at 0.

    ``plain_rows``: rows with no encrypted field (written without a keyring).
    """

    model_config = ConfigDict(frozen=True)

    rows_by_key: dict[str, int]
    plain_rows: int
    total_rows: int


def _params(after: int, batch: int) -> tuple[object, ...]:
    return (after, OPENING, len(ERROR_PREFIX), ERROR_PREFIX, batch)


def rotate_keys(
    path: Path,
    opener: FieldOpener,
    *,
    batch_size: int = 200,
    busy_timeout: float = 5.0,
    progress: Callable[[int], None] | None = None,
) -> RotationReport:
    """Re-wrap, ``batch_size`` rows a transaction, every data key not under the first key."""
    keyring = opener.keyring
    if keyring is None:
        raise ValueError("rotation needs the keyring (AUDIT_ENCRYPTION_KEYS)")
    primary = keyring.primary
    cache: dict[tuple[str, str], str] = {}
    rotated = checked = unreadable = batches = 0
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
    try:
        conn.execute("PRAGMA secure_delete = ON")
        after = 0
        while True:
            rows = conn.execute(_CANDIDATES, _params(after, batch_size)).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            updates = []
            for ident, params, error in rows:
                checked += 1
                if not ((key_ids(params) | key_ids(error)) - {primary}):
                    continue
                try:
                    new_params = opener.rewrap_text(params, cache)
                    new_error = opener.rewrap_text(error, cache)
                except ValueError:
                    unreadable += 1
                    continue
                updates.append((new_params, new_error, ident, params, error))
            if not updates:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                done = sum(conn.execute(_UPDATE, u).rowcount for u in updates)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            rotated += done
            batches += 1
            if progress is not None:
                progress(done)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return RotationReport(
        key_id=primary,
        rows_rotated=rotated,
        rows_checked=checked,
        unreadable=unreadable,
        batches=batches,
    )


def key_usage(path: Path, busy_timeout: float = 5.0) -> KeyUsage:
    """Rows per key id, read in one snapshot through a read-only connection."""
    tidy = not companions_exist(path)
    conn = connect_readonly(path, busy_ms=int(busy_timeout * 1000))
    counts: dict[str, int] = {}
    encrypted = 0
    try:
        conn.execute("BEGIN")
        total = int(conn.execute("SELECT COUNT(*) FROM audit_logs").fetchone()[0])
        after = 0
        while True:
            rows = conn.execute(_CANDIDATES, _params(after, 5000)).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            for _, params, error in rows:
                found = key_ids(params) | key_ids(error)
                if found:
                    encrypted += 1
                for kid in found:
                    counts[kid] = counts.get(kid, 0) + 1
        conn.execute("COMMIT")
    finally:
        conn.close()
        if tidy:
            tidy_companions(path)
    return KeyUsage(
        rows_by_key=dict(sorted(counts.items())), plain_rows=total - encrypted, total_rows=total
    )
