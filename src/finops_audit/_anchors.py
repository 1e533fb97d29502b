"""Anchors: signed records of a trail's end, kept where its writer cannot rewrite them.

A hash chain alone cannot show that its newest rows were deleted (the end
simply moves back). An anchor records ``(last_id, its row hash, row count,
time, key scheme)``, signed with the anchor subkey of ``AUDIT_HMAC_KEY``
(plain SHA-256 without a key: then it guards against accidents only, since
anyone can write a valid unkeyed anchor). The writer appends one every
``AUDIT_ANCHOR_INTERVAL`` seconds of activity (only when rows were committed
since the last one) and one at close, off the callers' path, to
``AUDIT_ANCHOR_PATH``: one JSON line each, ``O_APPEND``, created 0600,
fsync'd; meant for another volume or a log shipper.

``verify --anchors FILE`` then fails when an anchored row is gone or changed,
or the trail holds fewer rows than an anchor counted (rows removed by a
signed purge checkpoint excepted).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from ._chain import CURRENT_SCHEME, Chainer

__all__ = [
    "ANCHOR_FORMAT",
    "Anchor",
    "AnchorFileError",
    "AnchorLog",
    "anchor_line",
    "check_anchors",
    "read_anchors",
]

logger = logging.getLogger("finops_audit")

#: Version of an anchor line's layout (its ``anchor`` field).
ANCHOR_FORMAT = 1


@dataclass(frozen=True)
class Anchor:
    """One verified line of an anchor file."""

    line: int
    last_id: int
    last_hash: str
    rows: int
    time: str


class AnchorFileError(ValueError):
    """A line of an anchor file is unreadable or its signature does not match.

    Never raised to users: ``verify`` turns it into a failed report naming the
    file and the line.
    """


def _fields(db: str, last_id: int, last_hash: str, rows: int, stamp: str, scheme: int) -> list[Any]:
    return [ANCHOR_FORMAT, scheme, db, last_id, last_hash, rows, stamp]


def anchor_line(
    chainer: Chainer, db: str, last_id: int, last_hash: str, rows: int, stamp: str
) -> bytes:
    """The JSON line (newline included) of one anchor."""
    signature = chainer.anchor_signature(
        _fields(db, last_id, last_hash, rows, stamp, CURRENT_SCHEME)
    )
    record = {
        "anchor": ANCHOR_FORMAT,
        "scheme": CURRENT_SCHEME,
        "db": db,
        "last_id": last_id,
        "last_hash": last_hash,
        "rows": rows,
        "time": stamp,
        "sig": signature,
    }
    return orjson.dumps(record) + b"\n"


class AnchorLog:
    """The writer's side: when an anchor is due, and appending it durably.

    Used from the writer's thread only. A failed append is logged (once per
    distinct error) and retried at the next interval; it never fails a batch.
    """

    def __init__(self, path: Path, chainer: Chainer, db: str, interval: float) -> None:
        self.path = Path(path)
        self._chainer = chainer
        self._db = db
        self._interval = interval
        self._next = time.monotonic() + interval
        self._pending = False
        self._last_error: str | None = None  # pragma: no mutate
        self.written = 0

    def committed(self) -> bool:
        """Note a commit; true when an anchor is due now."""
        self._pending = True
        return time.monotonic() >= self._next  # pragma: no mutate

    @property
    def pending(self) -> bool:
        return self._pending

    def append(self, last_id: int, last_hash: str, rows: int) -> None:
        self._next = time.monotonic() + self._interval
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = anchor_line(self._chainer, self._db, last_id, last_hash, rows, stamp)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            text = f"{type(exc).__name__}: {exc}"  # pragma: no mutate
            if text != self._last_error:
                self._last_error = text
                logger.warning("finops_audit could not append an anchor to %s: %s", self.path, exc)
            return
        self._last_error = None  # pragma: no mutate
        self._pending = False
        self.written += 1


def read_anchors(path: Path, chainer: Chainer) -> list[Anchor]:
    """Every anchor line of ``path``, each checked; raises :class:`AnchorFileError`.

    With a key, a line must carry a keyed signature that matches (an unkeyed
    one is a forgery: anyone can make it). Without a key, a keyed line cannot
    be checked and is an error that says so.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AnchorFileError(f"cannot read anchor file {path}: {exc}") from None
    out: list[Anchor] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        # the last line has no newline: a write cut short or an edit
        last = len(lines)
        raise AnchorFileError(f"anchor file {path} line {last}: truncated (no end of line)")
    for number, raw in enumerate(lines, start=1):
        out.append(_parse(path, number, raw, chainer))
    return out


def _parse(path: Path, number: int, raw: bytes, chainer: Chainer) -> Anchor:
    where = f"anchor file {path} line {number}"
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AnchorFileError(f"{where}: not a JSON anchor record (garbled or truncated)") from None
    try:
        if not isinstance(record, dict) or record.get("anchor") != ANCHOR_FORMAT:
            raise TypeError
        scheme, db, stamp, sig = (record[k] for k in ("scheme", "db", "time", "sig"))
        last_id, last_hash, rows = record["last_id"], record["last_hash"], record["rows"]
        if not (
            isinstance(scheme, int)
            and isinstance(db, str)
            and isinstance(stamp, str)
            and isinstance(sig, str)
            and type(last_id) is int
            and type(rows) is int
            and isinstance(last_hash, str)
            and last_id >= 0
            and rows >= 0
        ):
            raise TypeError
    except (TypeError, KeyError):
        raise AnchorFileError(f"{where}: not an anchor record (missing or wrong fields)") from None
    if scheme != CURRENT_SCHEME:
        raise AnchorFileError(f"{where}: unknown anchor scheme {scheme!r}")
    keyed = sig.startswith("hmac-sha256:")
    if keyed and not chainer.keyed:
        raise AnchorFileError(
            f"{where}: the anchor is signed with a key: set AUDIT_HMAC_KEY to verify it"
        )
    if chainer.keyed and not keyed:
        raise AnchorFileError(
            f"{where}: the anchor is not signed with the key (forged, or written "
            "without AUDIT_HMAC_KEY)"
        )
    expected = chainer.anchor_signature(_fields(db, last_id, last_hash, rows, stamp, scheme))
    if expected != sig:
        raise AnchorFileError(
            f"{where}: the signature does not match: the line was altered or forged "
            "(or the key is wrong: check AUDIT_HMAC_KEY)"
        )
    return Anchor(number, last_id, last_hash, rows, stamp)


def check_anchors(
    anchors: Iterable[Anchor],
    source: str,
    hashes: dict[int, str | None],
    first_id: int | None,
    last_id: int | None,
    purged_through: int | None,
    purged_hash: str | None,
) -> tuple[int | None, str] | None:
    """The first anchor the verified trail contradicts, as ``(id, problem)``.

    ``hashes`` holds the row hash of every anchored id that is present;
    ``first_id``..``last_id`` are the rows present (contiguous: the chain walk
    checked that) and ``purged_through`` the signed checkpoint they start after.
    """
    for anchor in anchors:
        where = f"(anchor {source} line {anchor.line}, {anchor.time})"
        target = anchor.last_id
        if target == 0:
            continue
        if target in hashes:
            if hashes[target] != anchor.last_hash:
                return target, f"row {target} differs from its anchor {where}: it was changed"
        elif purged_through is not None and target <= purged_through:
            if target == purged_through and purged_hash != anchor.last_hash:
                return (
                    target,
                    f"the purge checkpoint at row {target} contradicts its anchor {where}",
                )
        else:
            top = last_id if last_id is not None else purged_through or 0
            return (
                top + 1,
                f"anchored row {target} is gone {where}: rows {top + 1}..{target} "
                "(at least) were deleted",
            )
        present = (
            0
            if first_id is None or last_id is None  # pragma: no mutate
            else max(0, min(target, last_id) - first_id + 1)
        )
        accounted = present + min(target, purged_through or 0)
        if accounted < anchor.rows:
            return (
                target,
                f"the trail holds {accounted} rows through id {target} where its anchor "
                f"{where} counted {anchor.rows}: rows were deleted",
            )
    return None
