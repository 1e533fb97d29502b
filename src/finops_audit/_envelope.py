"""The stored form of an encrypted value, and the part of it the hash chain covers.

Needs no key and no ``cryptography``: readers without the keyring, ``verify``
and the chain use it. The encryption itself is :mod:`finops_audit._fieldcrypt`.

Stored forms (version ``v1``)::

    parameters value   {"$enc":"v1","kid":"k1","k":"<wrapped data key>","ct":"<ciphertext>"}
                       (plus "bi":"hmac:..." for an AUDIT_HMAC_FIELDS value: the blind index)
    error_message      $enc:v1:<kid>:<wrapped data key>:<ciphertext>

``ct`` (base64 of nonce, AES-256-GCM ciphertext and tag) never changes once
written. ``kid`` and ``k`` (the writer batch's random data key, wrapped under
key ``kid``) are what ``rotate-keys`` rewrites. So the chain covers each value
*without* ``kid`` and ``k`` (:func:`chain_view`): rotation keeps every row
hash valid, while a flipped bit, or a ciphertext moved to another row or
column, still breaks ``verify`` with no key at all. A changed ``kid``/``k``
cannot forge a value (the data key is authenticated by GCM under the key id,
and each value by its row's event id, column and key path): it makes the
value unreadable, which decryption and ``verify`` with the keyring report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = [
    "ENVELOPE_KEY",
    "ERROR_PREFIX",
    "MARKER_KEY",
    "VERSION",
    "chain_view",
    "error_key_id",
    "has_envelope",
    "is_envelope",
    "mark_error",
    "mark_parameters",
    "marker",
    "without_ciphertext",
]

ENVELOPE_KEY = "$enc"
VERSION = "v1"
#: What a reader without the right key sees in place of an encrypted value.
MARKER_KEY = "$encrypted"
#: Stored error messages that are encrypted start with this.
ERROR_PREFIX = f"{ENVELOPE_KEY}:{VERSION}:"

#: The opening of every stored envelope (what a cheap substring check looks for).
OPENING = '{"$enc":"v1","kid":"'
_WRAP_IN_TEXT = re.compile(r'\{"\$enc":"v1","kid":"[^"\\]*","k":"[^"\\]*",')
_WRAP_IN_ERROR = re.compile(r"\$enc:v1:[^:]*:[^:]*:")


def chain_view(row: Sequence[Any]) -> Sequence[Any]:
    """``row`` as the hash chain covers it: each envelope without its key id and wrap.

    Rows without an envelope (every row of a trail without encryption) come
    back as they are, after one substring check per text column.
    """
    params: Any = row[2]
    error: Any = row[4] if len(row) > 4 else None
    wrapped_params = isinstance(params, str) and OPENING in params
    wrapped_error = isinstance(error, str) and error.startswith(ERROR_PREFIX)
    if not (wrapped_params or wrapped_error):
        return row
    out = list(row)
    if wrapped_params:
        out[2] = _WRAP_IN_TEXT.sub('{"$enc":"v1",', params)
    if wrapped_error:
        out[4] = _WRAP_IN_ERROR.sub(ERROR_PREFIX, error, count=1)
    return out


def is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and value.get(ENVELOPE_KEY) == VERSION and "ct" in value


def has_envelope(value: Any, depth: int = 0) -> bool:
    """Does a decoded parameters document hold an encrypted value anywhere?"""
    if isinstance(value, dict):
        if is_envelope(value):
            return True
        return depth < 64 and any(has_envelope(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return depth < 64 and any(has_envelope(v, depth + 1) for v in value)
    return False


def marker(envelope: dict[str, Any], problem: str | None = None) -> dict[str, Any]:
    """``{"$encrypted": true, "kid": "k1"}`` (plus the blind index, and what went wrong)."""
    out: dict[str, Any] = {MARKER_KEY: True, "kid": envelope.get("kid")}
    if "bi" in envelope:  # the blind index: one pseudonym, or a document's by key path
        out["pseudonyms" if isinstance(envelope["bi"], dict) else "pseudonym"] = envelope["bi"]
    if problem:
        out["error"] = problem
    return out


def error_key_id(text: str) -> str | None:
    """The key id of an encrypted error message, or None if it is not one."""
    if not text.startswith(ERROR_PREFIX):
        return None
    return text[len(ERROR_PREFIX) :].split(":", 1)[0]


def mark_error(text: str, problem: str | None = None) -> str:
    """``[encrypted with key k1]`` in place of an encrypted error message."""
    kid = error_key_id(text)
    return f"[encrypted with key {kid}: {problem}]" if problem else f"[encrypted with key {kid}]"


def mark_parameters(value: Any, depth: int = 0) -> Any:
    """A decoded document with every envelope replaced by its :func:`marker`."""
    if isinstance(value, dict):
        if is_envelope(value):
            return marker(value)
        if depth >= 64:
            return value
        return {k: mark_parameters(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list) and depth < 64:
        return [mark_parameters(v, depth + 1) for v in value]
    return value


def without_ciphertext(row: Any) -> Any:
    """A forwarded row (a named tuple) with encrypted values as markers and an encrypted
    error message left out: what ``AUDIT_OTLP_ENCRYPTED_FIELDS=omit`` exports."""
    params, error = row.parameters, row.error_message
    changes: dict[str, Any] = {}
    if isinstance(params, str) and OPENING in params:
        try:
            doc = orjson.loads(params)
        except orjson.JSONDecodeError:
            doc = None
        changes["parameters"] = (
            orjson.dumps(mark_parameters(doc)).decode() if doc is not None else "{}"
        )
    if isinstance(error, str) and error.startswith(ERROR_PREFIX):
        changes["error_message"] = None
    return row._replace(**changes) if changes else row
