"""Keys and a catalogue of values for the encryption tests (issue 14).

Every catalogue value is unique text (or digits) that appears nowhere else, so
finding it in any byte the library wrote means plaintext leaked.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from typing import Any

from finops_audit import AuditService, audit_tool_sync

RAW_OLD = os.urandom(32)
RAW_NEW = os.urandom(32)
OLD = base64.b64encode(RAW_OLD).decode()
NEW = base64.b64encode(RAW_NEW).decode()
#: The keyring before rotation: only the old key.
RING_OLD = f"k-old:{OLD}"
#: After: the new key first (it encrypts), the old one kept to read and re-wrap.
RING_BOTH = f"k-new:{NEW},k-old:{OLD}"
RING_NEW_ONLY = f"k-new:{NEW}"

ACCOUNT = "Zq9acct-918273645501"
#: Keyword arguments of one call: strings, numbers, unicode, nesting, lists, nulls.
CATALOGUE: dict[str, Any] = {
    "account_id": ACCOUNT,
    "arn": "arn:aws:iam::Zq9arn-4455:role/Zq9RoleName",
    "region": "Zq9region-eu-central-7",
    "amount": 918273645.25,
    "count": 7364518273645,
    "flag": True,
    "nothing": None,
    "unicode": "Zq9ünï-çødé-東京-🚀",
    "nested": {"bucket": "Zq9bucket-name", "tags": ["Zq9tag-one", {"deep": "Zq9deep-value"}]},
    "empty": "",
    "big": "Zq9big-" + "q" * 20_000,
}
ERROR_TEXT = "Zq9error-detail: quota exceeded for Zq9acct-errorside"
#: Texts that must never appear in a stored byte (the big value by its prefix).
PLAINTEXTS = [
    ACCOUNT,
    "Zq9arn-4455",
    "Zq9RoleName",
    "Zq9region-eu-central-7",
    "918273645.25",
    "7364518273645",
    "Zq9ünï-çødé-東京-🚀",
    "Zq9bucket-name",
    "Zq9tag-one",
    "Zq9deep-value",
    "Zq9big-",
    "Zq9error-detail",
    "Zq9acct-errorside",
]


def key_bytes() -> list[bytes]:
    """Every form a key could leak in: raw, base64, URL-safe base64, hex."""
    out = []
    for raw in (RAW_OLD, RAW_NEW):
        out += [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode()]
    return out


def record(service: AuditService, calls: int = 1) -> None:
    """``calls`` successful calls with the catalogue and one failing call."""

    @audit_tool_sync(service=service)
    def describe(**kwargs: Any) -> str:
        return "ok"

    @audit_tool_sync(service=service)
    def charge(account_id: str, amount: float) -> None:
        raise PermissionError(ERROR_TEXT)

    for _ in range(calls):
        describe(**CATALOGUE)
    with contextlib.suppress(PermissionError):
        charge(ACCOUNT, 12.5)


def no_plaintext(data: bytes, where: str) -> None:
    for text in PLAINTEXTS:
        assert text.encode() not in data, f"{text[:24]!r} is in {where}"
        escaped = json.dumps(text)[1:-1].encode()  # as JSON with ensure_ascii writes it
        assert escaped not in data, f"{text[:24]!r} (JSON-escaped) is in {where}"
    for key in key_bytes():
        assert key not in data, f"key material is in {where}"
