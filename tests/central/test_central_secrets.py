"""Secrets in every field never reach a PostgreSQL row, and the URL's password stays hidden.

The session of :mod:`tests.operations._secrets` is forwarded to a real
central store; then every row of every table of the database, read as text,
is searched for each secret.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from finops_audit import AuditService
from tests.operations._secrets import absent, present, record_secrets


def all_rows_as_text(url: str) -> bytes:
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname <> 'information_schema' AND schemaname NOT LIKE 'pg\\_%'"
        ).fetchall()
        assert tables
        parts = []
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            parts.extend(row[0] for row in conn.execute(query))
    return "\n".join(parts).encode()


def test_no_secret_in_any_central_row(pg_url: str, tmp_path: Path) -> None:
    service = AuditService(tmp_path / "buffer.db", db_url=pg_url, replica_id="replica-secrets")
    try:
        count = record_secrets(service)
        service.forward(timeout=60)
        assert len(service.get_logs()) == count  # read back from the central store
    finally:
        service.close()
    rows = all_rows_as_text(pg_url)
    absent(rows, "the PostgreSQL rows")
    present(rows, "the PostgreSQL rows")


def test_the_database_password_is_masked_in_every_view(pg_url: str, tmp_path: Path) -> None:
    parts = urlsplit(pg_url)
    password = parts.password
    if not password:  # the test server trusts local users: any password shows the masking
        password = "unusedPgZq9password"
        netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}"
        netloc += f":{parts.port}" if parts.port else ""
        url = urlunsplit(parts._replace(netloc=netloc))
    else:
        url = pg_url
    service = AuditService(tmp_path / "buffer.db", db_url=url, replica_id="r-mask")
    try:
        settings_text = f"{service!r} {service.trail} {service.settings!r} {service.settings}"
        settings_text += repr(service.settings.model_dump()) + service.settings.model_dump_json()
    finally:
        service.close()
    assert password not in settings_text
