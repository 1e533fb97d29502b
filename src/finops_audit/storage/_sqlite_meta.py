"""The signed records of a SQLite trail (``audit_meta``) that ``verify`` relies on.

* ``legacy_through``: the last id written before the hash chain existed
  (``0`` on a trail created with the chain). Written **once**, when a trail
  older than the chain (or a new file) is first prepared, and never again:
  on a trail whose schema is already chained, a missing, unsigned or altered
  marker is a verify failure, and opening the file never re-creates it. (The
  issue this answers: deleting the marker, nulling every hash and editing a
  row once made the trail "pre-chain" and verify said OK.)
* ``scheme``: the key scheme (see :mod:`finops_audit._chain`), ``2`` for
  every trail created since; a trail without it was written under scheme 1
  and keeps verifying (and growing) under it.

Other ``audit_meta`` rows (the forwarder's ``buffer_id`` and ``replica_id``)
are not relied on by verify and carry no signature.

A file an intruder rewrites to look exactly like a trail older than the chain
(``audit_meta`` dropped, ``row_hash`` dropped, ``user_version`` lowered)
cannot be told from a genuine one by the file alone: anchors kept elsewhere
(``AUDIT_ANCHOR_PATH``) catch that.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

import aiosqlite

from .._chain import CURRENT_SCHEME, Chainer

__all__ = [
    "PriorShape",
    "TrailMeta",
    "meta_table_exists",
    "prior_shape",
    "read_meta",
    "write_first_meta",
    "writing_scheme",
]

logger = logging.getLogger("finops_audit")

#: ``user_version`` from which every trail we wrote has ``audit_meta``.
_META_ALWAYS_FROM = 4


@dataclass(frozen=True)
class TrailMeta:
    """What verify needs from ``audit_meta``, checked against the signatures."""

    chainer: Chainer
    legacy_through: int | None
    problem: str | None = None


@dataclass(frozen=True)
class PriorShape:
    """What the file held before this open's ``CREATE TABLE IF NOT EXISTS`` ran."""

    meta_existed: bool
    had_row_hash: bool


# The writer's side (prior_shape, write_first_meta, writing_scheme) runs on a
# plain sqlite3 connection (the writer's, inside its preparing transaction, or
# a purge's); verify reads through aiosqlite (meta_table_exists, read_meta).
_HAS_META = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_meta'"
_SCHEME = "SELECT value FROM audit_meta WHERE key = 'scheme'"


def prior_shape(conn: sqlite3.Connection) -> PriorShape:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_logs)")}  # pragma: no mutate
    return PriorShape(conn.execute(_HAS_META).fetchone() is not None, "row_hash" in columns)


async def meta_table_exists(conn: aiosqlite.Connection) -> bool:
    return bool(list(await conn.execute_fetchall(_HAS_META)))


async def _user_version(conn: aiosqlite.Connection) -> int:
    rows = await conn.execute_fetchall("PRAGMA user_version")  # pragma: no mutate
    return int(next(iter(rows))[0])


def write_first_meta(
    conn: sqlite3.Connection,
    signer: Chainer,
    *,
    meta_existed: bool,
    had_row_hash: bool,
    path: object,
) -> None:
    """Sign the marker (and the scheme) once, when a trail without them is first prepared.

    Runs inside the preparing transaction, after the tables exist. A trail
    that had ``audit_meta``, or whose ``user_version`` says it always had one,
    is left alone whatever its ``audit_meta`` holds.
    """
    if meta_existed:
        return
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= _META_ALWAYS_FROM:
        logger.warning(
            "audit database %s has lost its audit_meta table (it was removed); its signed "
            "records are never re-created, and `finops-audit verify` reports the trail as "
            "tampered",
            path,
        )
        return
    # Chained rows of a trail from before audit_meta were signed with the raw key.
    scheme = 1 if had_row_hash else CURRENT_SCHEME
    signer = signer.for_scheme(scheme)
    if scheme != 1:
        conn.execute(
            "INSERT INTO audit_meta (key, value, signature) VALUES ('scheme', ?, ?)",
            (str(scheme), signer.meta_signature("scheme", str(scheme))),
        )
    through = int(
        conn.execute(
            "SELECT COALESCE((SELECT MIN(id) - 1 FROM audit_logs WHERE row_hash IS NOT NULL), "
            "(SELECT MAX(id) FROM audit_logs), 0)"  # pragma: no mutate
        ).fetchone()[0]
    )
    conn.execute(
        "INSERT INTO audit_meta (key, value, signature) VALUES ('legacy_through', ?, ?)",
        (str(through), signer.meta_signature("legacy_through", str(through))),
    )
    if through:
        logger.warning(
            "audit database %s: rows 1..%d were written before the hash chain; they are "
            "recorded (signed) as such, once",
            path,
            through,
        )


def writing_scheme(conn: sqlite3.Connection) -> int:
    """The key scheme the trail's meta names, for extending it (unchecked: verify checks)."""
    if conn.execute(_HAS_META).fetchone() is None:
        return CURRENT_SCHEME
    row = conn.execute(_SCHEME).fetchone()
    return 2 if row is not None and row[0] == "2" else 1


async def read_meta(conn: aiosqlite.Connection, chainer: Chainer) -> TrailMeta:
    """The trail's scheme and marker, each checked against its signature."""
    if not await meta_table_exists(conn):
        if await _user_version(conn) < _META_ALWAYS_FROM:
            # an old trail not upgraded yet (read-only): hash-less rows only as a prefix
            return TrailMeta(chainer.for_scheme(1), None)
        return _bad(chainer, "the trail's audit_meta table was removed")
    meta: dict[str, tuple[Any, Any]] = {
        str(key): (value, signature)
        for key, value, signature in await conn.execute_fetchall(
            "SELECT key, value, signature FROM audit_meta WHERE key IN ('scheme', 'legacy_through')"
        )
    }
    scheme = 1
    if "scheme" in meta:
        value, signature = meta["scheme"]
        current = chainer.for_scheme(CURRENT_SCHEME)
        if value != str(CURRENT_SCHEME) or current.meta_signature("scheme", value) != signature:
            return _bad(chainer, _ALTERED.format(what="key scheme record"))
        scheme = CURRENT_SCHEME
    signer = chainer.for_scheme(scheme)
    if "legacy_through" not in meta:
        return _bad(
            signer,
            "the trail's signed pre-chain marker (audit_meta 'legacy_through') is missing: "
            "it was deleted",
        )
    value, signature = meta["legacy_through"]
    if (
        not isinstance(value, str)
        or not value.isdigit()
        or signer.meta_signature("legacy_through", value) != signature
    ):
        return _bad(signer, _ALTERED.format(what="pre-chain marker"))
    return TrailMeta(signer, int(value))


_ALTERED = (
    "the trail's signed {what} does not match: the key is wrong "
    "(check AUDIT_HMAC_KEY) or the record was altered"
)


def _bad(chainer: Chainer, problem: str) -> TrailMeta:
    return TrailMeta(chainer, None, problem)
