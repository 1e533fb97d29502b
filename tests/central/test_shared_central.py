"""One central store per process: a reader sees what every trail of the process
forwarding to the same ``AUDIT_DB_URL`` accepted, whichever handle reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from finops_audit import AuditConfigError, AuditService, audit_tool_sync


def test_a_reader_of_the_central_store_sees_other_buffers_of_the_process(
    tmp_path: Path, pg_url: str
) -> None:
    a = AuditService(db_path=tmp_path / "a.db", db_url=pg_url, replica_id="a", handle_signals=False)
    b = AuditService(db_path=tmp_path / "b.db", db_url=pg_url, replica_id="b", handle_signals=False)
    try:
        assert a._writer is not b._writer  # two buffers, two writers

        @audit_tool_sync(service=a, name="from_a")
        def tool(i: int) -> int:
            return i

        for i in range(3):
            tool(i)
        # b never saw these calls: its read catches a's buffer up first.
        assert [e.tool_name for e in b.get_logs()] == ["from_a"] * 3
    finally:
        a.close(timeout=30)
        b.close(timeout=30)


def test_one_buffer_cannot_forward_to_two_central_stores(tmp_path: Path, pg_url: str) -> None:
    other = pg_url.rsplit("/", 1)[0] + "/another_database"
    with (
        AuditService(db_path=tmp_path / "a.db", db_url=pg_url, handle_signals=False),
        pytest.raises(AuditConfigError) as caught,
    ):
        AuditService(db_path=tmp_path / "a.db", db_url=other, handle_signals=False)
    message = str(caught.value)
    assert "db_url='***' there, '***' here" in message
    assert pg_url not in message
    assert str(tmp_path / "a.db") in message
