"""With the keyring every reader gets back exactly what was called; no stored byte holds it.

Round trip through ``get_logs``, ``aget_logs``, ``iter_logs``, the CLI's ``logs
--json`` and ``export --decrypt``; a plain export keeps the ciphertext. The raw
bytes of the database, ``-wal``, ``-shm`` (while open and after close) and of a
backup hold neither a catalogue value nor any form of a key.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from finops_audit import AuditService

from ..operations._util import cli_env, raw_bytes, run_cli
from ._crypto import ACCOUNT, CATALOGUE, ERROR_TEXT, RING_OLD, no_plaintext, record


def _expected_error() -> str:
    return f"PermissionError: {ERROR_TEXT}"


@pytest.fixture
def trail(db_path: Path) -> tuple[Path, bytes]:
    service = AuditService(db_path, encryption_keys=RING_OLD)
    try:
        record(service)
        service.flush()
        while_open = raw_bytes(db_path)
    finally:
        service.close()
    return db_path, while_open


def test_get_logs_returns_exactly_what_was_called(trail: tuple[Path, bytes]) -> None:
    db_path, _ = trail
    with AuditService(db_path, encryption_keys=RING_OLD) as service:
        ok = service.get_logs(tool_name="describe")
        failed = service.get_logs(status="FAILURE")
        assert service.verify().ok
    assert len(ok) == 1
    assert ok[0].parameters == CATALOGUE
    assert ok[0].error_message is None
    assert failed[0].parameters == {"account_id": ACCOUNT, "amount": 12.5}
    assert failed[0].error_message == _expected_error()


def test_async_and_paged_readers_decrypt_too(trail: tuple[Path, bytes]) -> None:
    db_path, _ = trail
    with AuditService(db_path, encryption_keys=RING_OLD) as service:
        paged = list(service.iter_logs(page_size=1))
        slowest = service.slowest_calls(limit=5)

        async def read() -> list[dict[str, object]]:
            return [e.parameters for e in await service.aget_logs()]

        async_params = asyncio.run(read())
    assert [e.parameters for e in paged] == [CATALOGUE, {"account_id": ACCOUNT, "amount": 12.5}]
    assert CATALOGUE in [e.parameters for e in slowest]
    assert CATALOGUE in async_params


def test_no_plaintext_nor_key_in_database_wal_shm(trail: tuple[Path, bytes]) -> None:
    db_path, while_open = trail
    no_plaintext(while_open, "the database files while open")
    no_plaintext(raw_bytes(db_path), "the database files after close")
    assert b'"$enc":"v1","kid":"k-old"' in raw_bytes(db_path)  # the right bytes were searched


def test_no_plaintext_in_a_backup(trail: tuple[Path, bytes], tmp_path: Path) -> None:
    db_path, _ = trail
    with AuditService(db_path, encryption_keys=RING_OLD) as service:
        service.backup(tmp_path / "copy.db")
        restored = AuditService(tmp_path / "copy.db", encryption_keys=RING_OLD, read_only=True)
        with restored:
            assert CATALOGUE in [e.parameters for e in restored.get_logs()]
    data = (tmp_path / "copy.db").read_bytes()
    no_plaintext(data, "the backup")
    assert b'"$enc":"v1"' in data


def test_plain_export_keeps_ciphertext_and_decrypt_export_opens_it(
    trail: tuple[Path, bytes],
) -> None:
    db_path, _ = trail
    with AuditService(db_path, encryption_keys=RING_OLD) as service:
        plain, opened = io.StringIO(), io.StringIO()
        service.export(plain)
        service.export(opened, decrypt=True)
        csv_opened = io.StringIO()
        service.export(csv_opened, "csv", decrypt=True)
    no_plaintext(plain.getvalue().encode(), "a plain export")
    rows = [json.loads(line) for line in opened.getvalue().splitlines()]
    assert rows[0]["parameters"] == CATALOGUE
    assert rows[1]["error_message"] == _expected_error()
    assert ACCOUNT in csv_opened.getvalue()


def test_cli_reads_plaintext_with_the_keyring_and_markers_without(
    trail: tuple[Path, bytes], tmp_path: Path
) -> None:
    db_path, _ = trail
    with_key = cli_env(AUDIT_DB_PATH=str(db_path), AUDIT_ENCRYPTION_KEYS=RING_OLD)
    without = cli_env(AUDIT_DB_PATH=str(db_path))
    logs = run_cli("logs", "--json", cwd=tmp_path, env=with_key)
    assert logs.returncode == 0, logs.stderr
    entries = [json.loads(line) for line in logs.stdout.splitlines()]
    assert {json.dumps(e["parameters"], sort_keys=True) for e in entries} == {
        json.dumps(CATALOGUE, sort_keys=True),
        json.dumps({"account_id": ACCOUNT, "amount": 12.5}, sort_keys=True),
    }
    marked = run_cli("logs", "--json", cwd=tmp_path, env=without)
    assert marked.returncode == 0, marked.stderr
    no_plaintext(marked.stdout.encode(), "logs without the keyring")
    first = json.loads(marked.stdout.splitlines()[0])
    # everything encrypted (the default): the whole document is one envelope
    assert first["parameters"] == {"$encrypted": True, "kid": "k-old"}
    assert first["error_message"] == "[encrypted with key k-old]"
    # export --decrypt needs the keyring; a plain export keeps ciphertext
    refused = run_cli("export", "--decrypt", str(tmp_path / "x.jsonl"), cwd=tmp_path, env=without)
    assert refused.returncode == 1
    assert "AUDIT_ENCRYPTION_KEYS" in refused.stderr
    assert not (tmp_path / "x.jsonl").exists()
    done = run_cli("export", "--decrypt", str(tmp_path / "y.jsonl"), cwd=tmp_path, env=with_key)
    assert done.returncode == 0, done.stderr
    assert ACCOUNT in (tmp_path / "y.jsonl").read_text()
    plain = run_cli("export", str(tmp_path / "z.jsonl"), cwd=tmp_path, env=with_key)
    assert plain.returncode == 0, plain.stderr
    no_plaintext((tmp_path / "z.jsonl").read_bytes(), "a plain CLI export")


def test_selected_fields_only_and_errors_by_name(db_path: Path) -> None:
    with AuditService(
        db_path, encryption_keys=RING_OLD, encrypt_fields=["account_id", "bucket"]
    ) as service:
        record(service)
        service.flush()
        raw = raw_bytes(db_path)
        entries = {e.tool_name: e for e in service.get_logs()}
    assert entries["describe"].parameters == CATALOGUE
    for secret in (ACCOUNT, "Zq9bucket-name"):
        assert secret.encode() not in raw
    for kept in ("Zq9region-eu-central-7", "Zq9tag-one", "Zq9error-detail"):
        assert kept.encode() in raw  # not selected: stored as before


def test_redaction_runs_first_secrets_are_removed_not_encrypted(db_path: Path) -> None:
    with AuditService(db_path, encryption_keys=RING_OLD) as service:
        record_secret = {"password": "Zq9hunter2-password", "region": "Zq9r"}

        from finops_audit import audit_tool_sync

        @audit_tool_sync(service=service)
        def login(**kwargs: object) -> None:
            return None

        login(**record_secret)
        entry = service.get_logs()[0]
    assert entry.parameters == {"password": "[REDACTED]", "region": "Zq9r"}


def test_equality_search_through_the_blind_index(db_path: Path) -> None:
    settings = {
        "encryption_keys": RING_OLD,
        "hmac_key": "an-hmac-key-of-at-least-32-bytes-0123456789",
        "hmac_fields": ["account_id"],
    }
    with AuditService(db_path, **settings) as service:  # type: ignore[arg-type]
        record(service, calls=2)
        found = service.get_logs(parameter_value=ACCOUNT)
        # substring search over encrypted values is unavailable: it never crashes,
        # and base64 that happens to match is never a result
        assert service.get_logs(parameter_value="Zq9region") == []
        assert service.get_logs(parameter_value="A") is not None
        raw = raw_bytes(db_path)
    assert len(found) == 3
    assert {e.parameters["account_id"] for e in found} == {ACCOUNT}
    assert ACCOUNT.encode() not in raw
    with AuditService(db_path, read_only=True, **settings) as reader:  # type: ignore[arg-type]
        marked = reader.get_logs(tool_name="charge")[0]
    assert marked.parameters["account_id"] == ACCOUNT  # with the keyring: plaintext
    with AuditService(
        db_path, read_only=True, hmac_key=settings["hmac_key"], hmac_fields=["account_id"]
    ) as no_keys:
        hidden = no_keys.get_logs(parameter_value=ACCOUNT)
    assert len(hidden) == 3
    assert hidden[0].parameters["pseudonyms"]["account_id"].startswith("hmac:")
    assert hidden[0].parameters["$encrypted"] is True


def test_encrypted_error_messages_group_as_one_per_tool(db_path: Path) -> None:
    with AuditService(db_path, encryption_keys=RING_OLD) as service:
        record(service, calls=1)
        record(service, calls=1)
        groups = service.error_groups()
        stats = service.tool_stats()
    charge = [g for g in groups if g.tool_name == "charge"]
    assert len(charge) == 1
    assert charge[0].count == 2
    assert charge[0].error_message == "[encrypted error message]"
    assert {s.tool_name: s.calls for s in stats} == {"describe": 2, "charge": 2}
