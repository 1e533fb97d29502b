"""Helpers for the tests of code that uses finops_audit.

``captured_audit()`` makes a throw-away default service on a temporary file,
so tools decorated with the bare ``@audit_tool`` record into it, and restores
the previous default afterwards::

    from finops_audit.testing import captured_audit

    def test_my_tool_is_audited():
        with captured_audit() as audit:
            my_tool(region="eu-west-1")
        [entry] = audit.entries()
        assert entry.parameters == {"region": "eu-west-1"}

Decorators that were given an explicit ``service=`` keep using it. Signal
handling is off for the captured service: tests should not change how the
test runner stops.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .models import AuditLogEntry
from .service import MAX_LIMIT, AuditService, set_default_service

__all__ = ["CapturedAudit", "captured_audit"]


class CapturedAudit:
    """What ``captured_audit`` yields: the service and its entries, oldest first."""

    def __init__(self, service: AuditService) -> None:
        self.service = service

    def entries(self, **filters: Any) -> list[AuditLogEntry]:
        """Every entry recorded so far (after a flush), oldest first; ``get_logs`` filters."""
        return list(reversed(self.service.get_logs(limit=MAX_LIMIT, **filters)))

    def tool_names(self) -> list[str]:
        return [e.tool_name for e in self.entries()]


@contextmanager
def captured_audit(**settings: Any) -> Iterator[CapturedAudit]:
    """Record into a temporary default service for the duration of the block.

    ``settings`` are ``AuditService`` arguments (e.g. ``redact=False``).
    """
    folder = Path(tempfile.mkdtemp(prefix="finops-audit-test-"))
    options = {"handle_signals": False, **settings}
    service = AuditService(db_path=folder / "audit.db", **options)
    previous = set_default_service(service)
    try:
        yield CapturedAudit(service)
    finally:
        set_default_service(previous)
        try:
            service.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
