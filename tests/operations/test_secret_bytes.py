"""Secrets in every field never reach any byte the library writes.

One session (:mod:`tests.operations._secrets`) puts secrets in parameters
(by key and by shape, nested, next to values too big to store whole), in the
error message (echoing a nested ``credentials`` password, five megabytes
long), in ``audit_context`` labels and in the caller fields. Then the raw
bytes of the database, ``-wal`` and ``-shm`` (while open and after close),
of JSONL and CSV exports (through the library and the CLI), of a backup and
of the anchor file are searched for each secret.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from finops_audit import AuditService
from finops_audit.config import AuditSettings

from ._secrets import AWS_SECRET, absent, present, record_secrets, secret
from ._util import companions, raw_bytes, run_cli

R = "[REDACTED]"
#: The failing call's whole error message, as the tool raised it.
RAISED = (
    f"PermissionError: bad password {secret('nested')} for svc-finops; key {AWS_SECRET} "
    + "x" * 5_000_000
)
HMAC_KEY = "an-hmac-key-of-at-least-32-bytes-0123456789"


def _settings(tmp_path: Path) -> dict[str, object]:
    extra: dict[str, object] = {}
    if "anchor_path" in AuditSettings.model_fields:  # anchors (issue 10, section 1)
        extra["anchor_path"] = tmp_path / "anchors.jsonl"
        extra["anchor_interval"] = 0.01
    return extra


@pytest.fixture
def recorded(db_path: Path, tmp_path: Path) -> tuple[Path, bytes]:
    """The session recorded into ``db_path``; returns it and the file bytes seen while open."""
    service = AuditService(db_path, **_settings(tmp_path))  # type: ignore[arg-type]
    try:
        count = record_secrets(service)
        service.flush()
        while_open = raw_bytes(db_path)
        assert len(service.get_logs()) == count
    finally:
        service.close()
    return db_path, while_open


def test_database_wal_and_shm_hold_no_secret(recorded: tuple[Path, bytes]) -> None:
    db_path, while_open = recorded
    absent(while_open, "the database files while open")
    present(while_open + raw_bytes(db_path), "the database files")
    absent(raw_bytes(db_path), "the database files after close")
    conn = sqlite3.connect(db_path)
    try:  # and no row of any table, read as text
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            absent(repr(rows).encode(), f"table {table}")
    finally:
        conn.close()


def test_every_field_is_redacted_and_the_neighbours_kept(recorded: tuple[Path, bytes]) -> None:
    db_path, _ = recorded
    with AuditService(db_path) as service:
        login, plain, failed = service.get_logs(limit=10)[::-1]
        assert service.get_logs(parameter_value="eu-west-1") != []
    # redact first, then cap: the password is redacted, the payload cut with a preview
    assert login.parameters["password"] == R
    assert login.parameters["payload"]["$truncated"] is True
    assert login.parameters["payload"]["preview"].startswith("yyyy")
    assert login.error_message == f"PermissionError: login failed for svc-finops with {R}"
    # every sensitive key by its words; max_tokens stays readable
    for key in ("dbPassword", "github_token", "stripe_secret_key", "aws_session_token"):
        assert plain.parameters[key] == R, key
    assert plain.parameters["headers"] == {"Authorization": R, "Accept": "text/plain"}
    assert plain.parameters["responses"] == [{"status": 200, "set-cookie": R}]
    assert plain.parameters["max_tokens"] == 4096
    assert plain.parameters["region"] == "eu-west-1"
    assert plain.parameters["blob"]["$truncated"] is True
    assert plain.parameters["note"]["preview"].startswith(R)
    # caller fields and labels
    assert plain.user == f"ops {R}"
    assert plain.session_id == R
    assert plain.request_id is not None
    assert plain.request_id.startswith(R)
    assert plain.labels == {"tenant": "acme-tenant", "authorization": R, "x-api-key": R}
    # every value inside credentials leaves the error message, which gets its own cap
    assert failed.parameters["credentials"] == R
    message = failed.error_message or ""
    assert message.startswith(f"PermissionError: bad password {R} for {R}; key {R} xxx")
    assert message.endswith(f"… [truncated, {len(RAISED)} bytes]")
    assert len(message.encode()) <= 8192


def test_exports_hold_no_secret(recorded: tuple[Path, bytes], tmp_path: Path) -> None:
    db_path, _ = recorded
    with AuditService(db_path) as service:
        for fmt in ("jsonl", "csv"):
            stream = io.StringIO()
            assert service.export(stream, fmt=fmt) == 3
            data = stream.getvalue().encode()
            absent(data, f"the {fmt} export")
            present(data, f"the {fmt} export")
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"export.{fmt}"
        done = run_cli("export", "--db", str(db_path), "--format", fmt, str(out), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        absent(out.read_bytes(), f"the CLI's {fmt} export")
        present(out.read_bytes(), f"the CLI's {fmt} export")
        absent((done.stdout + done.stderr).encode(), "the CLI's output")


def test_a_backup_holds_no_secret(recorded: tuple[Path, bytes], tmp_path: Path) -> None:
    db_path, _ = recorded
    dest = tmp_path / "backup.db"
    with AuditService(db_path) as service:
        report = service.backup(dest)
    assert report.rows == 3
    data = b"".join(p.read_bytes() for p in companions(dest))
    absent(data, "the backup")
    present(data, "the backup")


def test_the_anchor_file_holds_no_secret(recorded: tuple[Path, bytes], tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    if "anchor_path" not in AuditSettings.model_fields:
        pytest.skip("no anchors in this version")
    assert anchors.exists()
    absent(anchors.read_bytes(), "the anchor file")
    for line in anchors.read_text().splitlines():
        json.loads(line)


def test_with_an_hmac_key_pseudonyms_leave_no_secret_either(db_path: Path) -> None:
    with AuditService(db_path, hmac_key=HMAC_KEY, hmac_fields=["owner"]) as service:
        record_secrets(service)
        service.flush()
        absent(raw_bytes(db_path), "the database files (keyed)")
    absent(raw_bytes(db_path), "the database files (keyed) after close")
