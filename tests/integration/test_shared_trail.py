"""One trail per file in a process: every service and decorator on it shares one writer.

The promise under test: a call that has returned is visible to every reader in
the process, whichever ``AuditService`` handle reads, for one file however it
is spelled (relative, ``./``, through a symlink, after a ``chdir``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from finops_audit import (
    AuditClosedError,
    AuditConfigError,
    AuditService,
    AuditStatus,
    audit_tool,
    audit_tool_sync,
)
from tests.helpers import disk_count, run_script


def _record(service: AuditService | None = None, name: str = "scan") -> Any:
    """A sync tool audited by ``service`` (the default service when None)."""

    def scan(i: int = 0) -> int:
        if i < 0:
            raise ValueError(f"bad account {i}")
        return i

    if service is None:
        return audit_tool_sync(name=name)(scan)
    return audit_tool_sync(name=name, service=service)(scan)


# ---------------------------------------------------------------- the README, in order


def test_readme_audit_a_tool_then_read_the_trail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's "Audit a tool" block, then its "Read the trail" block, verbatim
    (with ``AUDIT_DB_PATH`` naming the ``audit.db`` its second line opens)."""
    monkeypatch.setenv("AUDIT_DB_PATH", "audit.db")

    # --- "Audit a tool" ---------------------------------------------------------
    @audit_tool  # async def tools
    async def check_tag_compliance(
        resource_types: list[str], filters: dict | None = None, severity: str = "all"
    ) -> dict: ...

    @audit_tool_sync  # plain def tools
    def get_tag_policy(policy_name: str = "default") -> dict: ...

    @audit_tool_sync
    def find_untagged_resources(region: str = "us-east-1") -> list[str]:
        raise ValueError("bad region")

    asyncio.run(check_tag_compliance(["ec2"], severity="high"))
    get_tag_policy("legacy")
    with pytest.raises(ValueError, match="bad region"):
        find_untagged_resources()

    # --- "Read the trail" -------------------------------------------------------
    svc = AuditService()  # AUDIT_* settings from the environment
    assert [e.tool_name for e in svc.get_logs()] == [
        "find_untagged_resources",
        "get_tag_policy",
        "check_tag_compliance",
    ]
    svc = AuditService(db_path="audit.db")  # explicit arguments win over the environment

    logs = svc.get_logs(limit=100)  # newest first
    assert len(logs) == 3
    assert (
        svc.get_logs(tool_name="check_tag_compliance", status=AuditStatus.FAILURE, limit=10) == []
    )
    failures = svc.get_logs(
        status="failure", since="2026-11-28T00:00Z", until=datetime.now(timezone.utc)
    )
    assert [(e.tool_name, e.error_message) for e in failures] == [
        ("find_untagged_resources", "ValueError: bad region")
    ]

    async def read_async() -> list[Any]:
        return await svc.aget_logs(tool_name="get_tag_policy")  # same, for async code

    assert [e.parameters for e in asyncio.run(read_async())] == [{"policy_name": "legacy"}]
    assert sorted(s.tool_name for s in svc.tool_stats()) == [
        "check_tag_compliance",
        "find_untagged_resources",
        "get_tag_policy",
    ]
    assert svc.verify().rows_checked == 3
    svc.close()


def test_bare_decorators_then_a_new_service_reads_every_call() -> None:
    """The issue's reproduction: three bare decorators, then ``AuditService().get_logs()``."""

    @audit_tool
    async def one() -> int:
        return 1

    @audit_tool_sync
    def two() -> int:
        return 2

    @audit_tool_sync
    def three() -> int:
        return 3

    asyncio.run(one())
    two()
    three()
    reader = AuditService()
    assert [e.tool_name for e in reader.get_logs()] == ["three", "two", "one"]
    assert [s.calls for s in reader.tool_stats()] == [1, 1, 1]
    report = reader.verify()
    assert report.ok
    assert report.rows_checked == 3
    reader.close()


# ---------------------------------------------------------------- one file, many spellings


def test_two_services_on_one_file_share_one_writer(db_path: Path) -> None:
    a = AuditService(db_path=db_path)
    b = AuditService(db_path=db_path)
    try:
        assert a._writer is b._writer
        tool = _record(a)
        for i in range(5):
            tool(i)
        # No flush on a: b's read covers what a's decorator handed over.
        assert b.count() == 5
        assert b.stats().written == 5
    finally:
        a.close()
        b.close()


def test_a_symlinked_path_is_the_same_trail(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked-folder").symlink_to(real)
    (real / "audit.db").touch()
    (tmp_path / "linked-file.db").symlink_to(real / "audit.db")
    services = [
        AuditService(db_path=real / "audit.db"),
        AuditService(db_path=tmp_path / "linked-folder" / "audit.db"),
        AuditService(db_path=tmp_path / "linked-file.db"),
    ]
    try:
        assert len({id(s._writer) for s in services}) == 1
        _record(services[1])(1)
        assert [s.count() for s in services] == [1, 1, 1]
    finally:
        for service in services:
            service.close()
    assert disk_count(real / "audit.db") == 1


def test_relative_dot_and_absolute_spellings_are_the_same_trail(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    services = [
        AuditService(db_path="x.db"),
        AuditService(db_path="./x.db"),
        AuditService(db_path=str(tmp_path / "sub" / ".." / "x.db")),
        AuditService(db_path=tmp_path / "x.db"),
    ]
    try:
        assert len({id(s._writer) for s in services}) == 1
        _record(services[0])(1)
        assert services[3].count() == 1
    finally:
        for service in services:
            service.close()


def test_a_relative_path_stays_put_after_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    a = AuditService(db_path="audit.db")  # not started yet: no file exists
    tool = _record(a)
    monkeypatch.chdir(second)
    same = AuditService(db_path=first / "audit.db")
    other = AuditService(db_path="audit.db")  # second/audit.db: another file
    try:
        assert same._writer is a._writer
        assert other._writer is not a._writer
        tool(1)
        assert same.count() == 1
        assert other.count() == 0
    finally:
        for service in (a, same, other):
            service.close()
    assert disk_count(first / "audit.db") == 1
    assert disk_count(second / "audit.db") == 0


# ---------------------------------------------------------------- handles and their lifecycle


def test_closing_one_handle_flushes_and_keeps_the_others_working(db_path: Path) -> None:
    a = AuditService(db_path=db_path)
    b = AuditService(db_path=db_path)
    by_a, by_b = _record(a, "by_a"), _record(b, "by_b")
    by_a(1)
    a.close()
    assert disk_count(db_path) == 1  # a's close flushed
    assert a.closed
    assert not b.closed
    with pytest.raises(AuditClosedError):
        a.get_logs()
    with pytest.raises(AuditClosedError):
        a.flush()
    a.close()  # twice is safe, and does not release b's writer a second time
    # The writer lives on for b, and so does a's decorator: its calls are not lost.
    by_b(2)
    by_a(3)
    assert [e.tool_name for e in b.get_logs()] == ["by_a", "by_b", "by_a"]
    b.close()
    assert b._writer.closed
    by_b(4)  # after the last handle closed: counted as dropped, never written
    assert b.stats().dropped == 1
    assert disk_count(db_path) == 3


@pytest.mark.asyncio
async def test_aclose_of_one_handle_keeps_the_other(db_path: Path) -> None:
    a = AuditService(db_path=db_path)
    b = AuditService(db_path=db_path)
    tool = audit_tool(name="t", service=a)(_async_tool)
    await tool()
    await a.aclose()
    await a.aclose()
    assert not b._writer.closed
    await tool()
    assert len(await b.aget_logs()) == 2
    await b.aclose()
    assert b._writer.closed


async def _async_tool() -> int:
    return 1


def test_after_the_last_close_a_new_service_starts_a_new_writer(db_path: Path) -> None:
    with AuditService(db_path=db_path) as a:
        _record(a)(1)
        old = a._writer
    with AuditService(db_path=db_path) as b:
        assert b._writer is not old
        assert not b._writer.closed
        _record(b)(2)
        assert b.count() == 2


def test_a_handle_dropped_without_close_keeps_the_writer_for_its_decorators(
    db_path: Path,
) -> None:
    tool = _record(AuditService(db_path=db_path))  # the service itself is not kept
    with AuditService(db_path=db_path) as reader:
        tool(1)
        assert reader.count() == 1
    tool(2)  # the reader's close did not stop the writer the decorator uses
    with AuditService(db_path=db_path) as reader:
        assert reader.count() == 2
        assert reader.stats().dropped == 0
        reader._writer.close()  # what interpreter exit would do


# ---------------------------------------------------------------- settings that differ


KEY = "k" * 32
OTHER_KEY = "o" * 32


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        ({"hmac_key": KEY}, {"hmac_key": OTHER_KEY}, "hmac_key='***' there, '***' here"),
        ({"hmac_key": KEY}, {}, "hmac_key='***' there, None here"),
        ({}, {"hash_chain": False}, "hash_chain=True there, False here"),
        ({}, {"redact": False}, "redact=True there, False here"),
        ({}, {"redact_keys": "badge"}, "redact_keys=[] there, ['badge'] here"),
        ({"hmac_fields": "account"}, {}, "hmac_fields=['account'] there, [] here"),
        ({"replica_id": "a"}, {"replica_id": "b"}, "replica_id='a' there, 'b' here"),
    ],
)
def test_a_setting_that_decides_what_is_written_must_agree(
    db_path: Path, first: dict[str, Any], second: dict[str, Any], named: str
) -> None:
    a = AuditService(db_path=db_path, **first)
    try:
        with pytest.raises(AuditConfigError) as caught:
            AuditService(db_path=db_path, **second)
        message = str(caught.value)
        assert named in message
        assert str(db_path) in message
        assert KEY not in message
        assert OTHER_KEY not in message
        # The refused service took no share: a's close is the last one.
        _record(a)(1)
        assert a.count() == 1
    finally:
        a.close()
    assert a._writer.closed


def test_a_different_custom_redactor_is_refused(db_path: Path) -> None:
    def hide(params: dict[str, Any]) -> dict[str, Any]:
        return dict.fromkeys(params, "x")

    with AuditService(db_path=db_path, redactor=hide) as a:
        with pytest.raises(AuditConfigError, match="redactor="):
            AuditService(db_path=db_path)
        with AuditService(db_path=db_path, redactor=hide) as b:  # the same one is fine
            assert b._writer is a._writer


def test_tuning_differences_follow_the_first_service_with_one_warning(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    a = AuditService(db_path=db_path, batch_size=10, flush_interval=0.5)
    b = AuditService(db_path=db_path)
    c = AuditService(db_path=db_path)
    d = AuditService(db_path=db_path, close_timeout=3.0)  # each handle's own: no warning
    try:
        warnings = [r.getMessage() for r in caplog.records if "shares the writer" in r.message]
        assert len(warnings) == 1  # b's; c's difference is the same one
        assert "batch_size=10 (asked: 1000)" in warnings[0]
        assert "flush_interval=0.5 (asked: 0.05)" in warnings[0]
        assert str(db_path) in warnings[0]
        assert b._writer is a._writer is c._writer is d._writer
        assert b._writer._batch == 10
    finally:
        for service in (a, b, c, d):
            service.close()


# ---------------------------------------------------------------- processes


def test_a_forked_child_gets_its_own_writer_and_shares_it_among_its_handles(
    tmp_path: Path,
) -> None:
    db = tmp_path / "audit.db"
    result = run_script(
        tmp_path,
        f"""
        import os, sys
        from finops_audit import AuditService, audit_tool_sync

        a = AuditService(db_path={str(db)!r}, handle_signals=False)

        @audit_tool_sync(service=a)
        def scan(who: str) -> str:
            return who

        scan("parent-before")
        a.flush()
        parent_writer = a._writer._thread
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                b = AuditService(db_path={str(db)!r}, handle_signals=False)
                assert b._writer is a._writer, "the child's handles share one writer"
                scan("child")
                whos = sorted(e.parameters["who"] for e in b.get_logs())
                assert whos == ["child", "parent-before"], whos
                assert a._writer._thread is not parent_writer, "the child has its own thread"
                b.close()
                a.close()
                assert a._writer.closed
            except BaseException as exc:
                print("child:", repr(exc), file=sys.stderr)
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        scan("parent-after")
        whos = sorted(e.parameters["who"] for e in a.get_logs())
        assert whos == ["child", "parent-after", "parent-before"], whos
        assert a._writer._thread is parent_writer
        a.close()
        print("ok")
        """,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_an_unclosed_shared_trail_is_drained_at_exit(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    (tmp_path / "link").symlink_to(tmp_path)
    result = run_script(
        tmp_path,
        f"""
        from finops_audit import AuditService, audit_tool_sync

        a = AuditService(db_path={str(db)!r})
        b = AuditService(db_path={str(tmp_path / "link" / "audit.db")!r})
        for service in (a, b):
            tool = audit_tool_sync(name="t", service=service)(lambda: None)
            for _ in range(100):
                tool()
        # nothing closed: one writer drains everything at exit
        """,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")},
    )
    assert result.returncode == 0, result.stderr
    assert disk_count(db) == 200


def test_a_read_only_service_reads_what_a_writer_of_the_process_accepted(db_path: Path) -> None:
    with AuditService(db_path=db_path) as writer:
        tool = _record(writer)
        tool(0)
        writer.flush()  # the file exists: a reader may open it
        tool(1)
        tool(2)
        with AuditService(db_path=db_path, read_only=True) as reader:
            assert reader._writer is not writer._writer  # its own mode=ro store
            assert reader.count() == 3
        tool(3)
        assert writer.count() == 4  # the reader's close left the writer running
