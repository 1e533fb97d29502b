"""Forking during a write loses nothing (issue 10, section 3).

A real interpreter writes a burst of audited calls from one thread and runs
queries from another while its main thread calls ``os.fork()`` 20 times at
random moments, so forks land inside the writer's transactions, between them
and inside reads. Each child makes its own audited calls and ends, half of
them through a normal interpreter exit (which finalises what is left), half
through ``os._exit``. Every child's and every parent's entry must land, the
counts exact, and the hash chain must verify. Before the fork gate, a child
forked inside a transaction failed "database is locked" for good and 0 of its
rows landed.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.guarantees._support import child_env, connect, run, write_script

FORKS = 20
PER_CHILD = 25

_SCRIPT = """
import json, os, random, sys, threading, time

from finops_audit import AuditService, audit_tool_sync

FORKS, PER_CHILD, DB = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
random.seed(int(sys.argv[4]))

# Small batches and a short interval: the writer is inside a transaction most of the time.
svc = AuditService(db_path=DB, batch_size=8, flush_interval=0.001)


@audit_tool_sync(service=svc)
def call(who: str, i: int) -> int:
    return i


stop = threading.Event()
sent = {"parent": 0, "queries": 0}


def burst() -> None:
    while not stop.is_set():
        call("parent", sent["parent"])
        sent["parent"] += 1


def reader() -> None:
    while not stop.is_set():
        svc.get_logs(tool_name="call", limit=5)
        sent["queries"] += 1


threads = [threading.Thread(target=burst), threading.Thread(target=reader)]
for t in threads:
    t.start()
children = []
for k in range(FORKS):
    time.sleep(random.random() * 0.01)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for i in range(PER_CHILD):
                call(f"child{k}", i)
            svc.flush(timeout=30)
            stats = svc.stats()
            if (stats.written, stats.lost, stats.dropped) != (PER_CHILD, 0, 0):
                print(f"child {k}: {stats}", file=sys.stderr)
                code = 3
            svc.close(timeout=30)
        except BaseException as exc:
            print(f"child {k}: {exc!r}", file=sys.stderr)
            code = 2
        if k % 2:
            os._exit(code)
        sys.exit(code)  # a normal exit: interpreter shutdown finalises what is left
    children.append(pid)
stop.set()
for t in threads:
    t.join()
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
svc.flush(timeout=30)
report = svc.verify()
stats = svc.stats()
svc.close()
print(json.dumps({
    "codes": codes,
    "parent_calls": sent["parent"],
    "queries": sent["queries"],
    "verify_ok": report.ok,
    "verify_problem": report.problem,
    "rows_checked": report.rows_checked,
    "written": stats.written,
    "lost": stats.lost,
}))
"""


def _who(row: tuple[str]) -> str:
    return str(json.loads(row[0])["who"])


def test_twenty_forks_during_a_write_burst_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    script = write_script(tmp_path, _SCRIPT)
    done = run(script, child_env(), str(FORKS), str(PER_CHILD), str(db), "10")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0] * FORKS, done.stderr
    assert result["lost"] == 0
    assert result["queries"] > 0  # forks also landed among reads
    with connect(db) as conn:
        found = conn.execute("SELECT parameters FROM audit_logs WHERE tool_name = 'call'")
        counts: dict[str, int] = {}
        for row in found:
            who = _who(row)
            counts[who] = counts.get(who, 0) + 1
    assert counts.pop("parent") == result["parent_calls"] == result["written"]
    assert counts == {f"child{k}": PER_CHILD for k in range(FORKS)}
    assert result["verify_ok"], result["verify_problem"]
    assert result["rows_checked"] == result["parent_calls"] + FORKS * PER_CHILD


def test_a_child_forked_before_the_first_call_writes_on_its_own(tmp_path: Path) -> None:
    """A service made before the fork but never used: the child starts its own writer."""
    db = tmp_path / "audit.db"
    script = write_script(
        tmp_path,
        """
        import os, sys
        from finops_audit import AuditService, audit_tool_sync

        svc = AuditService(db_path=sys.argv[1])

        @audit_tool_sync(service=svc)
        def call(who: str) -> None:
            pass

        pid = os.fork()
        call("child" if pid == 0 else "parent")
        svc.close(timeout=30)
        if pid == 0:
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        """,
    )
    done = run(script, child_env(), str(db))
    assert done.returncode == 0, done.stderr
    with connect(db) as conn:
        found = sorted(_who(r) for r in conn.execute("SELECT parameters FROM audit_logs"))
    assert found == ["child", "parent"]
