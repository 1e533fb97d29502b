"""Shared fixtures: a clean environment per test and a service on a private file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import finops_audit
from finops_audit import AuditService
from tests._skip_hints import pytest_terminal_summary  # noqa: F401  (a hook: one line per skip cause)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No AUDIT_* variable leaks in, the default ``audit_logs.db`` lands in tmp,
    and the process's default service never outlives the test."""
    for name in list(os.environ):
        if name.upper().startswith("AUDIT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    prev = finops_audit.set_default_service(None)
    if prev is not None and not prev.closed:
        prev.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def svc(db_path: Path) -> Iterator[AuditService]:
    service = AuditService(db_path=db_path)
    yield service
    service.close()


# ---------------------------------------------------------------- PostgreSQL (issue 6)
# Read before the autouse fixture clears AUDIT_* for each test.
_EXTERNAL_PG_DSN = os.environ.get("AUDIT_TEST_PG_DSN")
# In CI a missing PostgreSQL is a failure, not a skip.
_REQUIRE_PG = bool(os.environ.get("CI") or os.environ.get("FINOPS_REQUIRE_PG"))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A superuser DSN: ``AUDIT_TEST_PG_DSN`` if set, else a server started for the session."""
    if _EXTERNAL_PG_DSN:
        yield _EXTERNAL_PG_DSN
        return
    from finops_audit._pgserver import find_pg_bin, temporary_postgres

    if find_pg_bin() is None:
        message = "PostgreSQL server binaries not found and AUDIT_TEST_PG_DSN not set"
        if _REQUIRE_PG:
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    with temporary_postgres() as server:
        yield server.dsn


@pytest.fixture
def pg_url(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database on the test server for one test; dropped afterwards."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    from urllib.parse import urlsplit, urlunsplit

    yield urlunsplit(urlsplit(pg_admin_dsn)._replace(path=f"/{name}"))
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
