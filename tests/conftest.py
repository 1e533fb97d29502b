"""Shared fixtures: a clean environment per test and a service on a private file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import finops_audit
from finops_audit import AuditService


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
