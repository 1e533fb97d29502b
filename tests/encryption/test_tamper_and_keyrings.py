"""Tampering with encrypted values is caught; partial keyrings behave as documented.

Caught by decryption (a per-entry marker, one warning per key id) and by
``verify``: a ciphertext moved to another row, key or column and a flipped
bit break the chain with no key at all (it covers each ciphertext); a changed
key id or wrapped data key (which rotation may rewrite, so the chain leaves
them out) is caught by ``verify`` run with the keyring.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

import pytest

from finops_audit import AuditService, audit_tool_sync

from ..operations._util import execute
from ._crypto import RING_BOTH, RING_NEW_ONLY, RING_OLD

_CT = re.compile(r'"ct":"([^"]+)"')


#: Each value its own envelope (named fields); the default seals the whole document.
PER_VALUE = ["account", "region", "error_message"]


def _write(db_path: Path, ring: str, *values: str, fields: list[str] | None = PER_VALUE) -> None:
    extra = {"encrypt_fields": fields} if fields else {}
    with AuditService(db_path, encryption_keys=ring, **extra) as service:  # type: ignore[arg-type]

        @audit_tool_sync(service=service)
        def lookup(account: str, region: str) -> None:
            if account == "fail":
                raise LookupError(f"no such account in {region}")

        for value in values:
            try:
                lookup(value, f"region-of-{value}")
            except LookupError:
                pass


def _params(db_path: Path) -> list[tuple[int, str, str | None]]:
    conn = sqlite3.connect(db_path)
    try:
        return list(
            conn.execute("SELECT id, parameters, error_message FROM audit_logs ORDER BY id")
        )
    finally:
        conn.close()


def _set(db_path: Path, row_id: int, params: str, error: str | None = None) -> None:
    if error is None:
        execute(db_path, ("UPDATE audit_logs SET parameters = ? WHERE id = ?", (params, row_id)))
    else:
        execute(
            db_path,
            (
                "UPDATE audit_logs SET parameters = ?, error_message = ? WHERE id = ?",
                (params, error, row_id),
            ),
        )


def _read(db_path: Path, ring: str | None) -> tuple[list[dict[str, object]], list[str]]:
    extra = {"encryption_keys": ring} if ring else {}
    with AuditService(db_path, read_only=True, **extra) as service:  # type: ignore[arg-type]
        entries = service.get_logs()
        return [e.parameters for e in reversed(entries)], [
            e.error_message or "" for e in reversed(entries)
        ]


def _verify(db_path: Path, ring: str | None = None) -> tuple[bool, str | None]:
    extra = {"encryption_keys": ring} if ring else {}
    with AuditService(db_path, read_only=True, **extra) as service:  # type: ignore[arg-type]
        report = service.verify()
    return report.ok, report.problem


def test_untouched_trail_verifies_with_and_without_keys(db_path: Path) -> None:
    _write(db_path, RING_OLD, "a1", "a2", "fail")
    assert _verify(db_path) == (True, None)
    assert _verify(db_path, RING_OLD) == (True, None)


def test_a_ciphertext_moved_to_another_row_is_caught(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(db_path, RING_OLD, "a1", "a2")
    (_id1, p1, _), (id2, p2, _) = _params(db_path)
    ct1 = _CT.findall(p1)[0]
    ct2 = _CT.findall(p2)[0]
    _set(db_path, id2, p2.replace(ct2, ct1))
    with (
        caplog.at_level(logging.WARNING, logger="finops_audit"),
        AuditService(db_path, read_only=True, encryption_keys=RING_OLD) as service,
    ):
        for _ in range(3):  # one warning per service and key id, however often it reads
            params = [e.parameters for e in reversed(service.get_logs())]
            list(service.iter_logs())
    assert params[0] == {"account": "a1", "region": "region-of-a1"}
    moved = params[1]["account"]
    assert isinstance(moved, dict)
    assert moved["$encrypted"] is True
    assert moved["kid"] == "k-old"
    assert "does not decrypt" in str(moved["error"])
    assert params[1]["region"] == "region-of-a2"  # the rest of the entry still reads
    warnings = [r for r in caplog.records if "k-old" in r.getMessage()]
    assert len(warnings) == 1
    ok, problem = _verify(db_path)
    assert not ok
    assert "does not match its hash" in str(problem)


def test_a_ciphertext_moved_to_another_key_of_the_same_row_is_caught(db_path: Path) -> None:
    _write(db_path, RING_OLD, "a1")
    ((id1, p1, _),) = _params(db_path)
    account_ct, region_ct = _CT.findall(p1)
    swapped = p1.replace(account_ct, "@@").replace(region_ct, account_ct).replace("@@", region_ct)
    _set(db_path, id1, swapped)
    params, _ = _read(db_path, RING_OLD)
    assert all(v["$encrypted"] for v in params[0].values())  # type: ignore[index]
    assert not _verify(db_path)[0]


def test_a_ciphertext_moved_to_another_column_is_caught(db_path: Path) -> None:
    _write(db_path, RING_OLD, "fail", "a2")
    (_id1, _p1, e1), (id2, p2, _) = _params(db_path)
    assert e1 is not None
    assert e1.startswith("$enc:v1:k-old:")
    head = e1.rsplit(":", 1)[0]
    _set(db_path, id2, p2, f"{head}:{_CT.findall(p2)[0]}")  # a parameter's ct as the error
    _, errors = _read(db_path, RING_OLD)
    assert errors[1].startswith("[encrypted with key k-old: does not decrypt")
    assert not _verify(db_path)[0]


def test_a_flipped_bit_is_caught(db_path: Path) -> None:
    _write(db_path, RING_OLD, "a1")
    ((id1, p1, _),) = _params(db_path)
    ct = _CT.findall(p1)[0]
    flipped = ct[:20] + ("A" if ct[20] != "A" else "B") + ct[21:]
    _set(db_path, id1, p1.replace(ct, flipped))
    params, _ = _read(db_path, RING_OLD)
    assert params[0]["account"]["$encrypted"] is True  # type: ignore[index]
    assert not _verify(db_path)[0]


@pytest.mark.parametrize("change", ["kid", "wrap"])
def test_a_changed_key_id_or_wrap_is_caught_by_verify_with_the_keyring(
    db_path: Path, change: str
) -> None:
    _write(db_path, RING_OLD, "a1", "a2")
    (id1, p1, _), _ = _params(db_path)
    if change == "kid":
        # relabel under a key that IS in the keyring: the wrap is bound to its key id
        tampered = p1.replace('"kid":"k-old"', '"kid":"k-new"')
        ring = RING_BOTH
    else:
        wrap = re.search(r'"k":"([^"]+)"', p1).group(1)  # type: ignore[union-attr]
        tampered = p1.replace(wrap, wrap[:30] + ("A" if wrap[30] != "A" else "B") + wrap[31:])
        ring = RING_OLD
    _set(db_path, id1, tampered)
    params, _ = _read(db_path, ring)
    assert params[0]["account"]["$encrypted"] is True  # type: ignore[index]
    assert params[1]["account"] == "a2"
    # outside the chain (rotation rewrites it): keyless verify cannot see it ...
    assert _verify(db_path)[0]
    # ... verify with the keyring opens every value and names the row
    ok, problem = _verify(db_path, ring)
    assert not ok
    assert f"row {id1}" in str(problem)


def test_partial_keyrings(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rows under the old key, then rows under the new key (new key first)."""
    _write(db_path, RING_OLD, "old-1")
    _write(db_path, RING_BOTH, "new-1")
    # both keys: everything reads
    params, _ = _read(db_path, RING_BOTH)
    assert [p["account"] for p in params] == ["old-1", "new-1"]
    # only the old key: old rows read, new rows are marked, one warning names k-new
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="finops_audit"):
        params, _ = _read(db_path, RING_OLD)
    assert params[0]["account"] == "old-1"
    assert params[1]["account"] == {
        "$encrypted": True,
        "kid": "k-new",
        "error": "key k-new is not in the keyring",
    }
    assert len([r for r in caplog.records if "'k-new'" in r.getMessage()]) == 1
    # only the new key: the reverse
    params, _ = _read(db_path, RING_NEW_ONLY)
    assert params[0]["account"] == {
        "$encrypted": True,
        "kid": "k-old",
        "error": "key k-old is not in the keyring",
    }
    assert params[1]["account"] == "new-1"
    # no keyring: markers, never garbage, never an error
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="finops_audit"):
        params, _ = _read(db_path, None)
    assert params == [
        {
            "account": {"$encrypted": True, "kid": "k-old"},
            "region": {"$encrypted": True, "kid": "k-old"},
        },
        {
            "account": {"$encrypted": True, "kid": "k-new"},
            "region": {"$encrypted": True, "kid": "k-new"},
        },
    ]
    assert len([r for r in caplog.records if "k-old" in r.getMessage()]) == 1
    # the chain verifies without any key; verify with a keyring also opens every
    # value, so a keyring missing a key the rows use says which one
    assert _verify(db_path) == (True, None)
    assert _verify(db_path, RING_BOTH) == (True, None)
    ok, problem = _verify(db_path, RING_OLD)
    assert not ok
    assert "key k-new is not in the keyring" in str(problem)
    ok, problem = _verify(db_path, RING_NEW_ONLY)
    assert not ok
    assert "key k-old is not in the keyring" in str(problem)


def test_a_callers_own_envelope_lookalike_is_data_not_an_envelope(db_path: Path) -> None:
    lookalike = {"$enc": "v1", "kid": "k-old", "k": "AAAA", "ct": "AAAA"}
    with AuditService(db_path, encryption_keys=RING_OLD, encrypt_fields=["secret_field"]) as svc:

        @audit_tool_sync(service=svc)
        def tool(payload: dict[str, str], secret_field: str) -> None:
            return None

        tool(lookalike, "Zq9-hidden")
        entry = svc.get_logs()[0]
        assert svc.verify().ok
    assert entry.parameters["secret_field"] == "Zq9-hidden"
    assert entry.parameters["payload"] == {"kid": "k-old", "k": "AAAA", "ct": "AAAA", "$enc": "v1"}
    # its key id is covered by the chain like any other data
    ((row_id, text, _),) = _params(db_path)
    _set(db_path, row_id, text.replace('"kid":"k-old","k":"AAAA"', '"kid":"k-evil","k":"AAAA"'))
    assert not _verify(db_path)[0]


def test_whole_document_envelopes_moved_or_flipped_are_caught(db_path: Path) -> None:
    _write(db_path, RING_OLD, "a1", "a2", fields=None)
    (_, p1, _), (id2, p2, _) = _params(db_path)
    assert p1.startswith('{"$enc":"v1","kid":"k-old"')
    _set(db_path, id2, p1)  # row 1's whole envelope in row 2
    params, _ = _read(db_path, RING_OLD)
    assert params[0] == {"account": "a1", "region": "region-of-a1"}
    assert params[1]["$encrypted"] is True
    assert "does not decrypt" in str(params[1]["error"])
    assert not _verify(db_path)[0]
    ct = _CT.findall(p2)[0]
    _set(
        db_path,
        id2,
        p2.replace(ct, ct[:-6] + ("AAAA" if ct[-6:-2] != "AAAA" else "BBBB") + ct[-2:]),
    )
    params, _ = _read(db_path, RING_OLD)
    assert params[1]["$encrypted"] is True
    assert not _verify(db_path)[0]
    _set(db_path, id2, p2)  # put back: the chain and every value are whole again
    assert _verify(db_path, RING_OLD) == (True, None)
