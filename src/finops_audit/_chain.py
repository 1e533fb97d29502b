"""Tamper evidence: each row's hash covers the row and the previous row's hash.

``row_hash = H(canonical([id, timestamp, tool_name, parameters, status,
error_message, execution_time_ms, prev_hash]))`` where H is SHA-256, or
HMAC-SHA256 when ``AUDIT_HMAC_KEY`` is set (then nobody without the key can
recompute a chain after editing it). The canonical encoding is orjson's JSON
of that list: deterministic for text, integers and floats (shortest repr).

Including the row id makes reordering and renumbering visible; chaining makes
a modified, deleted or inserted row visible at the first row after it. The
writer computes hashes inside its write transaction, after reading the last
hash under SQLite's write lock, so several processes still build one chain.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["GENESIS", "Chainer"]

#: The ``prev_hash`` of the first row of a trail.
GENESIS = "0" * 64


class Chainer:
    """Computes row hashes (and checkpoint signatures) with an optional HMAC key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or None

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def digest(self, data: bytes) -> str:
        if self._key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def row_hash(self, row_id: int, row: Sequence[Any], prev_hash: str) -> str:
        """Hash of one stored row: ``row`` is (timestamp, tool, params, status, error, ms)."""
        return self.digest(orjson.dumps([row_id, *row, prev_hash]))

    def link(
        self, first_id: int, prev_hash: str, rows: Sequence[Sequence[Any]]
    ) -> tuple[list[tuple[Any, ...]], str]:
        """Give ``rows`` consecutive ids from ``first_id`` and chained hashes."""
        out: list[tuple[Any, ...]] = []
        row_id = first_id
        dumps = orjson.dumps
        digest = self.digest
        for row in rows:
            prev_hash = digest(dumps([row_id, *row, prev_hash]))
            out.append((row_id, *row, prev_hash))
            row_id += 1
        return out, prev_hash

    def meta_signature(self, key: str, value: str) -> str:
        return self.digest(orjson.dumps(["meta", key, value]))

    def checkpoint_signature(
        self, through_id: int, last_hash: str, rows_purged: int, created_at: str
    ) -> str:
        return self.digest(
            orjson.dumps(["checkpoint", through_id, last_hash, rows_purged, created_at])
        )
