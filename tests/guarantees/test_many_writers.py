"""Guarantee 5: many writers, one file; and a service survives os.fork().

Several worker processes (gunicorn/uvicorn style) write to the same database
at the same time: every entry lands exactly once and nobody sees "database is
locked". A service created and used before ``os.fork()`` works in the child
(its writer is recreated there) and in the parent, and entries the parent had
pending at the fork are written once, by the parent.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.guarantees._support import (
    child_env,
    finish,
    read_line,
    rows,
    run,
    spawn,
    write_script,
)

WORKER = """
import sys
from finops_audit import audit_tool_sync

@audit_tool_sync
def record(worker: int, seq: int) -> int:
    return seq

worker, calls = int(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()  # start together: the file does not exist yet
for seq in range(calls):
    assert record(worker=worker, seq=seq) == seq
# Normal exit, no close(): the exit hook drains, as in a worker told to stop.
"""


def test_four_processes_one_file(tmp_path: Path) -> None:
    db = tmp_path / "shared" / "audit.db"
    workers, calls = 4, 5_000
    script = write_script(tmp_path, WORKER)
    procs = [
        spawn(script, child_env(db_path=db), str(w), str(calls), stdin=subprocess.PIPE)
        for w in range(workers)
    ]
    for proc in procs:
        assert read_line(proc) == "ready"
    assert not db.exists()
    for proc in procs:  # "go" to all of them at once
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [finish(proc) for proc in procs]
    for status, _, err in results:
        assert status == 0, err
        assert "locked" not in err.lower(), err
        assert "finops_audit" not in err, err  # no warning, no error of any kind
    seen = Counter((r["parameters"]["worker"], r["parameters"]["seq"]) for r in rows(db))
    assert sum(seen.values()) == workers * calls
    assert set(seen) == {(w, s) for w in range(workers) for s in range(calls)}
    assert max(seen.values()) == 1


FORK = """
import os, sys, traceback
from finops_audit import AuditService, audit_tool_sync

HOW_CHILD_ENDS = sys.argv[2]
svc = AuditService(sys.argv[1], flush_interval=60, batch_size=10_000)

@audit_tool_sync(service=svc)
def record(who: str, seq: int) -> int:
    return seq

for seq in range(100):
    record(who="parent-before", seq=seq)
svc.flush()  # written before the fork
for seq in range(100, 200):
    record(who="parent-before", seq=seq)  # still pending at the fork
assert svc.stats().pending == 100, svc.stats()

pid = os.fork()
if pid == 0:
    code = 1
    try:
        assert svc.stats().pending == 0, svc.stats()  # the parent's entries stay the parent's
        for seq in range(300):
            assert record(who="child", seq=seq) == seq
        if HOW_CHILD_ENDS == "close":
            svc.close()
            os._exit(0)
        code = 0
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    sys.exit(code)  # a normal exit: the exit hook drains the child's writer

for seq in range(300):
    assert record(who="parent-after", seq=seq) == seq
_, status = os.waitpid(pid, 0)
svc.close()
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("child_ends", ["close", "exit"])
def test_service_keeps_working_across_fork(tmp_path: Path, child_ends: str) -> None:
    db = tmp_path / "audit.db"
    done = run(write_script(tmp_path, FORK), child_env(), str(db), child_ends)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", done.stderr  # the forked child's exit status
    seen = Counter((r["parameters"]["who"], r["parameters"]["seq"]) for r in rows(db))
    expected = {
        **{("parent-before", s): 1 for s in range(200)},
        **{("child", s): 1 for s in range(300)},
        **{("parent-after", s): 1 for s in range(300)},
    }
    assert dict(seen) == expected
