"""The encryption keyring: ``key_id:base64key`` pairs, the first one encrypting.

Parsed once at start-up (``AUDIT_ENCRYPTION_KEYS`` or the 0600 file named by
``AUDIT_ENCRYPTION_KEYS_FILE``), so a bad key fails the service's start, not
the thousandth write. Every error names what is wrong and which key id, never
a byte of any key. Keys are 256-bit (AES-256-GCM); the older ones stay in the
ring only to read (and re-encrypt) what they once encrypted.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["KEY_BYTES", "Keyring", "parse_keyring", "read_keyring_file"]

#: AES-256: every key in the ring is exactly this many bytes.
KEY_BYTES = 32

_KEY_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SEPARATORS = re.compile(r"[,\s]+")
_URLSAFE = str.maketrans("-_", "+/")


class Keyring:
    """Key ids in order, each to its 32-byte key; ``primary`` is the encrypting one."""

    __slots__ = ("_keys",)

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._keys = dict(keys)

    @property
    def primary(self) -> str:
        """The key id new values are encrypted under."""
        return next(iter(self._keys))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def get(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._keys.items())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never the key bytes
        return f"Keyring(ids={list(self._keys)!r}, primary={self.primary!r})"


def _decode_key(key_id: str, text: str) -> bytes:
    try:
        # standard or URL-safe alphabet; anything else is an error, never skipped
        raw = base64.b64decode(text.translate(_URLSAFE).encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValueError(
            f"key {key_id!r} is not valid base64; generate one with "
            "`python -c 'import os, base64; print(base64.b64encode(os.urandom(32)).decode())'`"
        ) from None
    if len(raw) != KEY_BYTES:
        raise ValueError(
            f"key {key_id!r} is {len(raw)} bytes; AES-256 keys are exactly {KEY_BYTES} bytes "
            "(44 base64 characters)"
        )
    return raw


def parse_keyring(text: str) -> Keyring:
    """``"k2:<base64>,k1:<base64>"`` (commas or whitespace between pairs) to a :class:`Keyring`.

    Raises :class:`ValueError` saying what is wrong; the caller names the variable.
    """
    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for part in _SEPARATORS.split("\n".join(lines)):
        if not part:
            continue
        key_id, sep, encoded = part.partition(":")
        if not sep or not encoded:
            raise ValueError(
                f"expected key_id:base64key pairs, got an entry without a key (id {key_id!r})"
                if _KEY_ID.fullmatch(key_id)
                else "expected key_id:base64key pairs separated by commas"
            )
        if not _KEY_ID.fullmatch(key_id):
            raise ValueError(f"key id {key_id[:64]!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
        if key_id in seen:
            raise ValueError(f"key id {key_id!r} appears twice; each key id names one key")
        seen.add(key_id)
        keys.append((key_id, _decode_key(key_id, encoded)))
    if not keys:
        raise ValueError("is empty: give at least one key_id:base64key pair, or unset it")
    return Keyring(keys)


def read_keyring_file(path: Path) -> Keyring:
    """The keyring in ``path``, which must be a regular file only its owner can read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        mode = st.st_mode & 0o777
        if mode & 0o077:
            raise ValueError(
                f"{path} has mode {mode:04o}: others can read the keys; run `chmod 600 {path}`"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(1 << 20)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text of key_id:base64key pairs") from None
    return parse_keyring(text)
