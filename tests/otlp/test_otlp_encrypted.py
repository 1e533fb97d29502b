"""OTLP export of an encrypted trail: ciphertext unchanged, or nothing (issue 14).

``AUDIT_OTLP_ENCRYPTED_FIELDS=ciphertext`` (the default) sends each encrypted
value's envelope exactly as stored; ``omit`` sends a marker without ciphertext
or wrapped key, and leaves an encrypted error message out. Either way no
request body holds a catalogue value or any form of a key.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from finops_audit import AuditService
from tests.encryption._crypto import RING_OLD, no_plaintext, record

from .receiver import OtlpReceiver


def _export(receiver: OtlpReceiver, db: Path, mode: str) -> dict[str, dict[str, object]]:
    service = AuditService(
        db,
        otlp_endpoint=receiver.url,
        replica_id="replica-enc",
        encryption_keys=RING_OLD,
        otlp_encrypted_fields=mode,
    )
    try:
        record(service)
        service.forward(timeout=30)
    finally:
        service.close()
    received = receiver.wait_for(2)
    return {r.attributes["finops_audit.event_id"]: r.attributes for r in received}


def _stored(db: Path) -> dict[str, tuple[str, str | None]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT event_id, parameters, error_message FROM audit_logs")
        return {e: (p, m) for e, p, m in rows}
    finally:
        conn.close()


def test_ciphertext_mode_sends_the_stored_envelopes_unchanged(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    got = _export(otlp_receiver, tmp_path / "b.db", "ciphertext")
    stored = _stored(tmp_path / "b.db")
    assert set(got) == set(stored)
    for event_id, attributes in got.items():
        params, error = stored[event_id]
        assert attributes["finops_audit.parameters"] == params
        assert attributes.get("finops_audit.error_message") == error
    no_plaintext(b"".join(otlp_receiver.bodies), "the OTLP request bodies")
    assert b'"$enc":"v1","kid":"k-old"' in b"".join(otlp_receiver.bodies)


def test_omit_mode_sends_no_ciphertext(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    got = _export(otlp_receiver, tmp_path / "b.db", "omit")
    bodies = b"".join(otlp_receiver.bodies)
    no_plaintext(bodies, "the OTLP request bodies")
    assert b'"$enc"' not in bodies
    assert b'"ct"' not in bodies
    assert b'"k":' not in bodies
    assert b"$enc:v1:" not in bodies
    for attributes in got.values():
        params = json.loads(str(attributes["finops_audit.parameters"]))
        assert params == {"$encrypted": True, "kid": "k-old"}
        assert "finops_audit.error_message" not in attributes
    failed = [a for a in got.values() if a["finops_audit.status"] == "FAILURE"]
    assert len(failed) == 1
    assert failed[0]["error.type"] == "tool_error"
    # the local trail still holds the ciphertext: omit is about what leaves
    assert any('"$enc"' in p for p, _ in _stored(tmp_path / "b.db").values())


def test_a_bad_mode_is_refused_at_start_up(tmp_path: Path) -> None:
    from finops_audit.exceptions import AuditConfigError

    with pytest.raises(AuditConfigError, match="otlp_encrypted_fields"):
        AuditService(tmp_path / "b.db", otlp_encrypted_fields="clear")
