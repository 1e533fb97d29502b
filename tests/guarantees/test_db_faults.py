"""Guarantee 4: database faults don't reach the tool.

With the file locked by another process, on a full filesystem, on a read-only
mount, or with its folder removed, tool calls keep returning; the writer keeps
what it holds, records the fault (logged once, not per retry) and writes the
backlog once the fault clears. A fault that never clears surfaces at close().
Filesystems here are real tmpfs mounts (see ``conftest.py``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from finops_audit import AuditError, AuditService, AuditStorageError, audit_tool_sync
from tests.guarantees._support import (
    count,
    finish,
    mount,
    read_line,
    spawn,
    wait_until,
    write_script,
)

LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()  # hold the write lock until the parent says so
conn.execute("COMMIT")
conn.close()
print("released", flush=True)
"""


def cannot_write_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "finops_audit"
        and r.levelno == logging.WARNING
        and "cannot write to" in r.getMessage()
    ]


def recorder(svc: AuditService) -> object:
    @audit_tool_sync(service=svc)
    def record(seq: int, blob: str = "") -> int:
        return seq

    return record


def test_write_lock_held_by_another_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    db = tmp_path / "audit.db"
    svc = AuditService(db, busy_timeout=0.2)
    try:
        record = recorder(svc)
        assert record(seq=-1) == -1  # type: ignore[operator]
        svc.flush()
        holder = spawn(write_script(tmp_path, LOCK_HOLDER), {}, str(db), stdin=subprocess.PIPE)
        assert read_line(holder) == "locked"

        returned: list[int] = []

        def worker(first: int) -> None:
            for seq in range(first, first + 250):
                returned.append(record(seq=seq))  # type: ignore[operator]

        threads = [threading.Thread(target=worker, args=(i * 250,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # Every call returned while the other process still holds the lock: it only
        # lets go when we write to its stdin, below.
        assert not any(t.is_alive() for t in threads)
        assert holder.poll() is None
        assert sorted(returned) == list(range(2000))
        wait_until(lambda: "locked" in (svc.stats().last_error or ""), what="the lock error")
        assert count(db) <= 1 + 0  # nothing of the 2,000 could be written yet

        status, out, err = finish(holder, stdin="go\n")
        assert (status, out.strip()) == (0, "released"), err
        svc.flush(timeout=30)
        assert count(db) == 2001
        stats = svc.stats()
        assert (stats.written, stats.pending, stats.dropped, stats.last_error) == (
            2001,
            0,
            0,
            None,
        )
        assert len(cannot_write_warnings(caplog)) == 1, cannot_write_warnings(caplog)
    finally:
        svc.close()


def test_write_lock_held_for_less_than_busy_timeout(tmp_path: Path) -> None:
    """The default busy_timeout (5 s): the writer waits inside SQLite and records no
    error yet. Calls must still return without dropping while queue_size has room."""
    db = tmp_path / "audit.db"
    svc = AuditService(db, batch_size=10, queue_size=5_000, block_timeout=0.05)
    holder = None
    try:
        record = recorder(svc)
        for seq in range(1_000):  # let the writer measure its pace first
            record(seq=-1 - seq)  # type: ignore[operator]
        svc.flush()
        holder = spawn(write_script(tmp_path, LOCK_HOLDER), {}, str(db), stdin=subprocess.PIPE)
        assert read_line(holder) == "locked"
        made = 0
        while made < 3_000 and svc.stats().dropped == 0:  # stop at the first drop
            assert record(seq=made) == made  # type: ignore[operator]
            made += 1
        assert holder.poll() is None  # the lock is still held
        assert svc.stats().dropped == 0, (made, svc.stats())
        status, _, err = finish(holder, stdin="go\n")
        assert status == 0, err
        svc.flush(timeout=30)
        assert count(db) == 1_000 + 3_000
    finally:
        if holder is not None and holder.poll() is None:
            finish(holder, stdin="go\n")
        svc.close()


def test_full_disk_keeps_entries_until_there_is_room(
    tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    db = tmpfs / "audit.db"
    svc = AuditService(db, batch_size=20)
    try:
        record = recorder(svc)
        blob = "x" * 4000
        made = 0
        while "full" not in (svc.stats().last_error or "").lower():
            assert made < 2000, f"the 256 KiB filesystem never filled: {svc.stats()}"
            for _ in range(20):
                assert record(seq=made, blob=blob) == made  # type: ignore[operator]
                made += 1
            # Let the writer try this chunk: written, or failing on the full disk.
            wait_until(
                lambda: svc.stats().pending == 0 or svc.stats().last_error is not None,
                what="the writer to try the chunk",
            )
        for _ in range(100):  # calls go on returning on a full disk
            assert record(seq=made, blob=blob) == made  # type: ignore[operator]
            made += 1
        assert svc.stats().pending > 0
        assert svc.stats().dropped == 0

        mount("-o", "remount,size=20m", str(tmpfs))
        svc.flush(timeout=30)
        assert count(db) == made
        assert svc.stats().last_error is None
        assert svc.stats().written == made
        assert len(cannot_write_warnings(caplog)) == 1, cannot_write_warnings(caplog)
    finally:
        svc.close()


def make_read_only_trail(tmpfs: Path, rows_before: int) -> Path:
    """A trail with ``rows_before`` rows on ``tmpfs``, then the mount made read-only."""
    db = tmpfs / "audit.db"
    with AuditService(db) as first:
        record = recorder(first)
        for seq in range(rows_before):
            record(seq=seq)  # type: ignore[operator]
    mount("-o", "remount,ro", str(tmpfs))
    return db


def test_read_only_filesystem_then_writable_again(
    tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    db = make_read_only_trail(tmpfs, rows_before=10)
    svc = AuditService(db)
    try:
        record = recorder(svc)
        for seq in range(10, 510):
            assert record(seq=seq) == seq  # type: ignore[operator]
        wait_until(lambda: svc.stats().last_error is not None, what="the read-only error")
        assert svc.stats().pending == 500
        mount("-o", "remount,rw", str(tmpfs))
        svc.flush(timeout=30)
        assert count(db) == 510
        assert svc.stats().written == 500
        assert svc.stats().last_error is None
        assert len(cannot_write_warnings(caplog)) == 1, cannot_write_warnings(caplog)
    finally:
        svc.close()


def test_folder_removed_while_running_is_recreated(tmp_path: Path) -> None:
    folder = tmp_path / "trail"
    db = folder / "audit.db"
    svc = AuditService(db)
    try:
        record = recorder(svc)
        for seq in range(100):
            record(seq=seq)  # type: ignore[operator]
        svc.flush()
        assert count(db) == 100
        shutil.rmtree(folder)
        for seq in range(100, 350):
            assert record(seq=seq) == seq  # type: ignore[operator]
        svc.flush(timeout=30)
        assert db.exists()
        assert count(db) == 250  # the rows made after the removal, in the new file
        assert count(db, "WHERE json_extract(parameters, '$.seq') < 100") == 0
    finally:
        svc.close()


def test_get_logs_sees_the_recreated_file(tmp_path: Path) -> None:
    folder = tmp_path / "trail"
    db = folder / "audit.db"
    with AuditService(db) as svc:
        record = recorder(svc)
        record(seq=1)  # type: ignore[operator]
        assert len(svc.get_logs()) == 1  # the reader connection is open now
        shutil.rmtree(folder)
        for seq in range(2, 5):
            record(seq=seq)  # type: ignore[operator]
        assert sorted(e.parameters["seq"] for e in svc.get_logs()) == [2, 3, 4]


def test_fault_that_never_clears_surfaces_at_close(
    tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="finops_audit")
    db = make_read_only_trail(tmpfs, rows_before=3)
    svc = AuditService(db, close_timeout=1.0)
    try:
        record = recorder(svc)
        made = 357
        for seq in range(made):
            assert record(seq=seq) == seq  # type: ignore[operator]
        wait_until(lambda: svc.stats().last_error is not None, what="the read-only error")
        assert "unable to open" in (svc.stats().last_error or "")
        with pytest.raises(
            AuditStorageError, match=rf"\b{made} audit entries could not be written"
        ):
            svc.close(timeout=10)
        stats = svc.stats()
        assert (stats.lost, stats.written, stats.pending, stats.closed) == (made, 0, 0, True)
        assert len(cannot_write_warnings(caplog)) == 1, cannot_write_warnings(caplog)
    finally:
        give_back(tmpfs, svc)
    assert count(db) == 3  # readable again once writable; the lost entries stay lost


def give_back(tmpfs: Path, svc: AuditService) -> None:
    """Let a service that failed to close finish, so the mount can go."""
    mount("-o", "remount,rw", str(tmpfs))
    with contextlib.suppress(AuditError):
        svc.close(timeout=30)


@pytest.mark.parametrize("batches", [1, 5])
def test_fault_that_never_clears_surfaces_within_close_timeout(tmpfs: Path, batches: int) -> None:
    db = make_read_only_trail(tmpfs, rows_before=3)
    svc = AuditService(db, close_timeout=1.0, batch_size=40)
    try:
        record = recorder(svc)
        made = 40 * batches - 3
        for seq in range(made):
            record(seq=seq)  # type: ignore[operator]
        wait_until(lambda: svc.stats().last_error is not None, what="the read-only error")
        with pytest.raises(AuditStorageError, match=rf"\b{made} audit entries"):
            svc.close()  # waits close_timeout=1.0 s at most
        assert svc.stats().lost == made
    finally:
        give_back(tmpfs, svc)
