"""The central store carries the ciphertext unchanged (issue 14).

Forwarded rows hold the same envelopes as the buffer; no PostgreSQL row of
any table holds a catalogue value or a key; a central reader with the
keyring gets plaintext, one without it gets markers, and the central chain
verifies with no key.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from finops_audit import AuditService
from tests.encryption._crypto import ACCOUNT, CATALOGUE, RING_OLD, no_plaintext, record

from .test_central_secrets import all_rows_as_text


def test_central_rows_hold_the_ciphertext_unchanged(pg_url: str, tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.db"
    service = AuditService(
        buffer, db_url=pg_url, replica_id="replica-enc", encryption_keys=RING_OLD
    )
    try:
        record(service)
        service.forward(timeout=60)
        entries = {e.tool_name: e for e in service.get_logs()}  # read from the central store
        assert service.verify().ok
    finally:
        service.close()
    assert entries["describe"].parameters == CATALOGUE
    assert entries["charge"].parameters["account_id"] == ACCOUNT
    no_plaintext(all_rows_as_text(pg_url), "the PostgreSQL rows")
    conn = sqlite3.connect(buffer)
    try:
        local = {
            e: (p, m)
            for e, p, m in conn.execute(
                "SELECT event_id, parameters, error_message FROM audit_logs"
            )
        }
    finally:
        conn.close()
    with psycopg.connect(pg_url) as pg:
        rows = pg.execute(
            "SELECT event_id::text, parameters_text, error_message FROM audit_logs"
        ).fetchall()
    assert len(rows) == len(local) == 2
    for event_id, params, error in rows:
        key = event_id.replace("-", "")
        assert (params, error) == local[key]
    # a central reader without the keyring: markers, and the chain still verifies
    reader = AuditService(tmp_path / "other.db", db_url=pg_url, read_only=True)
    try:
        marked = {e.tool_name: e for e in reader.get_logs()}
        assert reader.verify().ok
    finally:
        reader.close()
    assert marked["charge"].parameters == {"$encrypted": True, "kid": "k-old"}
    assert marked["charge"].error_message == "[encrypted with key k-old]"
