"""A small, known trail written through the decorators, shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from finops_audit import AuditLogEntry, AuditService, audit_context, audit_tool_sync

#: (tool, region, user) of each call, oldest first; check_tags fails for "mars-1".
CALLS = [
    ("list_policies", "eu-west-3", "alice"),
    ("check_tags", "us-east-1", "alice"),
    ("list_policies", "us-east-1", "bob"),
    ("check_tags", "mars-1", "bob"),
    ("estimate_cost", "us-east-1", "alice"),
    ("list_policies", "ap-south-1", "carol"),
    ("check_tags", "mars-1", "alice"),
    ("estimate_cost", "us-west-2", "bob"),
]


@pytest.fixture
def trail(db_path: Path) -> list[AuditLogEntry]:
    """:data:`CALLS` recorded in ``db_path``; returns the entries oldest first. Closed after."""
    with AuditService(db_path) as service:
        tools = {}
        for name in sorted({c[0] for c in CALLS}):

            @audit_tool_sync(name=name, service=service)
            def tool(region: str, verbose: bool = False) -> str:
                if region == "mars-1":
                    raise ValueError(f"unknown region {region}")
                return region

            tools[name] = tool
        for name, region, user in CALLS:
            with audit_context(user=user):
                try:
                    tools[name](region)
                except ValueError:
                    pass
        entries = list(service.iter_logs())
    assert len(entries) == len(CALLS)
    return entries
