"""``finops_audit.testing``: what users reach for in their own tests."""

from __future__ import annotations

import pytest

from finops_audit import AuditStatus, audit_tool, audit_tool_sync, get_default_service
from finops_audit.testing import captured_audit


def test_bare_decorators_record_into_the_captured_service() -> None:
    @audit_tool_sync
    def get_tag_policy(policy_name: str = "default") -> str:
        if policy_name == "legacy":
            raise LookupError("no tag policy named 'legacy'")
        return policy_name

    before = get_default_service()
    with captured_audit() as audit:
        assert get_default_service() is audit.service
        assert get_tag_policy(policy_name="strict") == "strict"
        with pytest.raises(LookupError):
            get_tag_policy(policy_name="legacy")
        entries = audit.entries()
        path = audit.service.db_path
    assert [(e.tool_name, e.parameters, e.status) for e in entries] == [
        ("get_tag_policy", {"policy_name": "strict"}, AuditStatus.SUCCESS),
        ("get_tag_policy", {"policy_name": "legacy"}, AuditStatus.FAILURE),
    ]
    assert audit.service.closed
    assert not path.exists()  # the temporary folder is gone
    assert get_default_service() is before  # the previous default is back


@pytest.mark.asyncio
async def test_async_tools_and_filters() -> None:
    @audit_tool
    async def check(region: str) -> str:
        return region

    with captured_audit(redact=False) as audit:
        await check(region="eu-west-1")
        await check(region="us-east-1")
        assert audit.tool_names() == ["check", "check"]
        assert len(audit.entries(status="SUCCESS")) == 2
        assert audit.service.settings.redact is False
