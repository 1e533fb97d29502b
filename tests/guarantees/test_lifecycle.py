"""Guarantee 7: lifecycle misuse is clear.

A closed service says so (``AuditClosedError`` mentioning "closed") when it is
queried or flushed; decorated tools go on working after close and their
entries are counted as dropped, never raised into the tool; every call made
while a close races with it is accounted for; and garbage collection of an
unclosed service warns (``ResourceWarning``) without doing any I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from finops_audit import (
    AuditClosedError,
    AuditError,
    AuditService,
    audit_tool,
    audit_tool_sync,
)
from finops_audit._writer import GAP_TOOL_NAME
from tests.guarantees._support import child_env, count, run, write_script


def test_queries_and_flushes_after_close_say_closed(tmp_path: Path) -> None:
    svc = AuditService(tmp_path / "audit.db")

    @audit_tool_sync(service=svc)
    def tool(seq: int) -> int:
        return seq

    tool(seq=1)
    svc.close()
    svc.close()  # safe twice
    asyncio.run(svc.aclose())  # and once more, async
    assert svc.closed
    assert "closed" in repr(svc)
    for call in (svc.get_logs, svc.flush):
        with pytest.raises(AuditClosedError, match="closed") as raised:
            call()
        assert isinstance(raised.value, RuntimeError)
    for acall in (svc.aget_logs, svc.aflush):
        with pytest.raises(AuditClosedError, match="closed"):
            asyncio.run(acall())  # type: ignore[arg-type]
    assert count(svc.db_path) == 1  # the close wrote what it had


@pytest.mark.asyncio
async def test_calls_after_close_return_normally_and_are_counted(tmp_path: Path) -> None:
    svc = AuditService(tmp_path / "audit.db")

    @audit_tool_sync(service=svc)
    def sync_tool(seq: int) -> int:
        return seq

    @audit_tool(service=svc)
    async def async_tool(seq: int) -> int:
        return seq

    sync_tool(seq=0)
    await svc.aclose()
    assert [sync_tool(seq=i) for i in range(1, 6)] == [1, 2, 3, 4, 5]
    assert [await async_tool(seq=i) for i in range(6, 9)] == [6, 7, 8]

    def failing() -> None:
        raise KeyError("still the tool's own error")

    failing_tool = audit_tool_sync(service=svc)(failing)
    with pytest.raises(KeyError, match="still the tool's own error"):
        failing_tool()
    stats = svc.stats()
    assert (stats.dropped, stats.written, stats.pending) == (9, 1, 0)
    assert count(svc.db_path) == 1


def test_close_returns_while_callers_keep_calling(tmp_path: Path) -> None:
    svc = AuditService(tmp_path / "audit.db", queue_size=5_000, batch_size=100, close_timeout=2)
    made = [0] * 4
    stop = threading.Event()

    @audit_tool_sync(service=svc)
    def tool(worker: int, seq: int) -> int:
        return seq

    def worker(w: int) -> None:
        while not stop.is_set():
            assert tool(worker=w, seq=made[w]) == made[w]
            made[w] += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        while sum(made) < 2_000:  # close while the callers are in full flow
            threading.Event().wait(0.001)
        svc.close()  # drains what it accepted, refuses (and counts) what comes later
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        with contextlib.suppress(AuditError):
            svc.close(timeout=30)
    stats = svc.stats()
    # Every call returned, and every entry is either on disk or counted as dropped.
    assert stats.written + stats.dropped == sum(made)
    assert stats.pending == stats.lost == 0
    assert stats.dropped > 0
    assert count(svc.db_path, "WHERE tool_name != ?", (GAP_TOOL_NAME,)) == stats.written


GC_UNCLOSED = """
import gc, sqlite3, sys, warnings
from finops_audit import AuditService, audit_tool_sync

db = sys.argv[1]
svc = AuditService(db, flush_interval=60, batch_size=10_000)

@audit_tool_sync(service=svc)
def tool(seq: int) -> int:
    return seq

for seq in range(50):
    tool(seq=seq)
svc.flush()
for seq in range(50, 120):
    tool(seq=seq)  # pending: the writer would write these only on a flush or at exit

def on_disk():
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0]
    finally:
        conn.close()

before = on_disk()
del tool  # the decorated tool holds the service's writer, not the service
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    del svc
    gc.collect()
after = on_disk()
print(before, after, [w.category.__name__ for w in caught])
# Never-started services have nothing to warn about.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    idle = AuditService(db + ".unused")
    del idle
    gc.collect()
print([w.category.__name__ for w in caught])
"""


@pytest.fixture(scope="module")
def gc_child(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp_path = tmp_path_factory.mktemp("gc")
    db = tmp_path / "audit.db"
    done = run(write_script(tmp_path, GC_UNCLOSED), child_env(), str(db))
    assert done.returncode == 0, done.stderr
    return db, done.stdout.splitlines()


def test_gc_of_an_unclosed_service_does_no_io_and_loses_nothing(
    gc_child: tuple[Path, list[str]],
) -> None:
    db, (first, second) = gc_child
    before, after, _ = first.split(" ", 2)
    assert (before, after) == ("50", "50")  # nothing written while it was collected
    assert second == "[]"  # a never-started service has nothing to warn about
    assert count(db) == 120  # ... and nothing was lost: the exit hook wrote the rest
    assert not Path(str(db) + ".unused").exists()


def test_gc_of_an_unclosed_service_warns(gc_child: tuple[Path, list[str]]) -> None:
    _, (first, _) = gc_child
    assert first.endswith("['ResourceWarning']"), first
