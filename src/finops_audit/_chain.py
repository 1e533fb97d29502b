"""Tamper evidence: each row's hash covers the row and the previous row's hash.

``row_hash = H(canonical([id, timestamp, tool_name, parameters, status,
error_message, execution_time_ms, <caller columns>, prev_hash]))`` where H is
SHA-256, or HMAC-SHA256 when ``AUDIT_HMAC_KEY`` is set (then nobody without
the key can recompute a chain after editing it). The canonical encoding is
orjson's JSON of that list: deterministic for text, integers and floats.

Including the row id makes reordering and renumbering visible; chaining makes
a modified, deleted or inserted row visible at the first row after it. The
writer computes hashes inside its write transaction, after reading the last
hash under SQLite's write lock, so several processes still build one chain.

Key schemes (recorded, signed, in each trail's ``audit_meta``):

* **1** (trails written before the ``scheme`` record existed): the raw
  ``AUDIT_HMAC_KEY`` signed rows, meta and checkpoints, and also made the
  pseudonyms, so a caller could obtain ``HMAC(key, x)`` for an ``x`` of their
  choosing. Kept so that such trails go on verifying.
* **2** (every new trail): separate subkeys derived with HKDF-SHA256 (RFC
  5869) and distinct labels: one for the chain (rows, meta, checkpoints), one
  for anchors, one for pseudonyms. A pseudonym can never be a valid hash.
  ``subkey = HKDF-SHA256(key, salt=b"finops-audit", info=label)`` (32 bytes)
  with the labels ``finops-audit/v2/chain``, ``finops-audit/v2/anchor`` and
  ``finops-audit/v2/pseudonym``.

Without a key both schemes are plain SHA-256 and prove integrity only
against accidents, never against someone who can rewrite the file.

Cost (the writer hashes every row): one ``orjson.dumps`` and one SHA-256 per
row, both in C. The keyed digest starts from HMAC's inner and outer states
precomputed once per key (:func:`_hmac_sha256`), which halves its cost
against ``hmac.new`` per row and hashes exactly the same bytes: the schemes
above are unchanged, so every existing trail verifies as before.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ._envelope import ERROR_PREFIX, OPENING, chain_view

__all__ = [
    "CURRENT_SCHEME",
    "GENESIS",
    "MIN_KEY_BYTES",
    "SCHEMES",
    "Chainer",
    "hkdf_sha256",
    "pseudonym_key",
]

#: The ``prev_hash`` of the first row of a trail.
GENESIS = "0" * 64
#: Shortest ``AUDIT_HMAC_KEY`` accepted (the output size of SHA-256).
MIN_KEY_BYTES = 32
#: Key scheme of new trails (see the module docstring).
CURRENT_SCHEME = 2
#: Every scheme this version verifies.
SCHEMES = (1, 2)

_SALT = b"finops-audit"
_CHAIN_LABEL = b"finops-audit/v2/chain"
_ANCHOR_LABEL = b"finops-audit/v2/anchor"
_PSEUDONYM_LABEL = b"finops-audit/v2/pseudonym"


def hkdf_sha256(key: bytes, info: bytes, length: int = 32, salt: bytes = _SALT) -> bytes:
    """RFC 5869 HKDF with SHA-256: extract with ``salt``, expand with ``info``."""
    if length > 255 * 32:
        raise ValueError("HKDF-SHA256 yields at most 8160 bytes")
    prk = hmac.new(salt, key, hashlib.sha256).digest()
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def pseudonym_key(key: bytes | None) -> bytes | None:
    """The subkey HMAC pseudonyms are made with (never the chain's or the anchors')."""
    return hkdf_sha256(key, _PSEUDONYM_LABEL) if key else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_BLOCK = 64  # SHA-256's block size, HMAC's pad length
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _hmac_sha256(key: bytes) -> Callable[[bytes], str]:
    """``hmac.new(key, data, sha256).hexdigest()`` with the key's pads hashed once (RFC 2104).

    Per call it copies two SHA-256 states instead of building an HMAC object
    and hashing both 64-byte pads again: same output, half the CPU.
    """
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD))
    outer = hashlib.sha256(key.translate(_OPAD))

    def digest(data: bytes) -> str:
        i = inner.copy()
        i.update(data)
        o = outer.copy()
        o.update(i.digest())
        return o.hexdigest()

    return digest


def _may_hold_envelopes(rows: Sequence[Sequence[Any]]) -> bool:
    """Could a row of ``rows`` hold an encrypted value? One substring search per batch.

    Conservative: true also for a lookalike (``chain_view`` then decides row
    by row, exactly), and for values that are not text.
    """
    try:
        return OPENING in "\0".join([r[2] for r in rows]) or ERROR_PREFIX in "\0".join(
            [r[4] for r in rows if r[4] is not None]
        )
    except TypeError:
        return True


#: Rows whose caller columns (after the first six) are all empty: the common case.
_NO_CALLER: tuple[None, ...] = (None,) * 9


class Chainer:
    """Computes row hashes, meta/checkpoint signatures and anchor signatures.

    ``key`` is the raw ``AUDIT_HMAC_KEY``; ``scheme`` picks how it is used
    (:meth:`for_scheme` gives the same key under another scheme: a trail is
    verified and extended under the scheme its signed meta records).
    """

    __slots__ = ("_anchor_key", "_chain_key", "_key", "digest", "scheme")

    #: The chain's hash of ``data`` as hex: SHA-256, or HMAC-SHA256 with the
    #: chain key (chosen once, here, not per row).
    digest: Callable[[bytes], str]

    def __init__(self, key: bytes | None = None, *, scheme: int = CURRENT_SCHEME) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown key scheme {scheme}: this version knows {SCHEMES}")
        self._key = key or None
        self.scheme = scheme
        if self._key is None:
            self._chain_key: bytes | None = None
        elif scheme == 1:
            self._chain_key = self._key
        else:
            self._chain_key = hkdf_sha256(self._key, _CHAIN_LABEL)
        self.digest = _sha256 if self._chain_key is None else _hmac_sha256(self._chain_key)
        # anchors are new with scheme 2: always their own subkey
        self._anchor_key = hkdf_sha256(self._key, _ANCHOR_LABEL) if self._key else None

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def for_scheme(self, scheme: int) -> Chainer:
        """This key under ``scheme`` (``self`` when it already is)."""
        return self if scheme == self.scheme else Chainer(self._key, scheme=scheme)

    def row_hash(self, row_id: int, row: Sequence[Any], prev_hash: str) -> str:
        """Hash of one stored row: ``row`` is (timestamp, tool, params, status, error, ms, ...).

        Encrypted values count without their key id and wrapped data key
        (:func:`~finops_audit._envelope.chain_view`), which key rotation rewrites.
        """
        return self.digest(orjson.dumps([row_id, *chain_view(row), prev_hash]))

    def link(
        self, first_id: int, prev_hash: str, rows: Sequence[Sequence[Any]]
    ) -> tuple[list[tuple[Any, ...]], str]:
        """Give ``rows`` consecutive ids from ``first_id`` and chained hashes."""
        full, bare, last = self.link_split(first_id, prev_hash, rows, split=False)
        assert not bare
        return full, last

    def link_split(
        self, first_id: int, prev_hash: str, rows: Sequence[Sequence[Any]], *, split: bool = True
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], str]:
        """:meth:`link`, with rows that have no caller (``split``) given apart, short.

        Returns ``(full, bare, last_hash)``: ``full`` rows are ``(id, *row,
        hash)``; ``bare`` rows, whose caller columns are all empty, are ``(id,
        six values, hash)``, because SQLite binds literal NULLs for free and a
        bound ``None`` at about 0.3 µs. The hash covers the whole row either way.
        One loop, one ``orjson.dumps`` and one digest per row, and one output
        tuple per row: this runs for every row the writer stores.
        """
        full: list[tuple[Any, ...]] = []
        bare: list[tuple[Any, ...]] = []
        add_full = full.append
        add_bare = bare.append
        dumps = orjson.dumps
        digest = self.digest
        no_caller = _NO_CALLER
        # encrypted values are hashed without their key id and wrap (chain_view):
        # asked once for the batch, not per row, since most trails have none
        wrapped = _may_hold_envelopes(rows)
        view = chain_view
        row_id = first_id
        for row in rows:
            prev_hash = digest(dumps([row_id, *(view(row) if wrapped else row), prev_hash]))
            if split and row[6:] == no_caller:
                add_bare((row_id, *row[:6], prev_hash))
            else:
                add_full((row_id, *row, prev_hash))
            row_id += 1
        return full, bare, prev_hash

    def meta_signature(self, key: str, value: str) -> str:
        """Signature of one ``audit_meta`` record (scheme 2 also signs its scheme number,
        so even an unkeyed trail whose scheme record was deleted fails verify)."""
        if self.scheme == 1:
            return self.digest(orjson.dumps(["meta", key, value]))
        return self.digest(orjson.dumps(["meta", key, value, self.scheme]))

    def checkpoint_signature(
        self, through_id: int, last_hash: str, rows_purged: int, created_at: str
    ) -> str:
        return self.digest(
            orjson.dumps(["checkpoint", through_id, last_hash, rows_purged, created_at])
        )

    def anchor_signature(self, fields: Sequence[Any]) -> str:
        """``hmac-sha256:<hex>`` with the anchor subkey, or ``sha256:<hex>`` without a key."""
        data = orjson.dumps(["anchor", *fields])
        if self._anchor_key is None:
            return "sha256:" + hashlib.sha256(data).hexdigest()
        return "hmac-sha256:" + hmac.new(self._anchor_key, data, hashlib.sha256).hexdigest()
