"""Faults a fleet must survive, with real processes and a real PostgreSQL server.

Replicas are interpreters running ``replica.py`` (audited sync and async tools,
every 50th call failing), each test has a private server it stops, freezes or
starts, and every check reads both ends from the outside: the central table
with a fresh psycopg connection, each buffer with a fresh ``sqlite3`` one.
What must hold whatever happened: every accepted entry is in PostgreSQL
exactly once (counted per replica, by event id and by chain position), every
buffer's cursor ends at its last row, and ``stats()`` shows no lag.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from finops_audit import AuditService

if TYPE_CHECKING:
    from tests.fleet.conftest import Replica

    Spawn = Callable[..., Replica]

FAIL_EVERY = 50  # replica.py's default: every 50th call raises


# ---------------------------------------------------------------- reading both ends


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Bounded poll: the first truthy ``predicate()``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or predicate}")
        time.sleep(0.005)


def central(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the central store, from a fresh connection."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return list(conn.execute(sql).fetchall())


def central_count(url: str) -> int:
    """Rows in the central trail; -1 while the server or the table is not there."""
    try:
        return int(central(url, "SELECT count(*) FROM audit_logs")[0][0])
    except psycopg.Error:
        return -1


def per_replica(url: str) -> dict[str, tuple[int, int, int, int]]:
    """replica_id -> (rows, distinct event ids, distinct chain positions, failures)."""
    rows = central(
        url,
        "SELECT replica_id, count(*), count(DISTINCT event_id), count(DISTINCT seq), "
        "count(*) FILTER (WHERE status = 'FAILURE') FROM audit_logs GROUP BY replica_id",
    )
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def central_ids(url: str, replica_id: str | None = None) -> set[str]:
    where = f" WHERE replica_id = '{replica_id}'" if replica_id else ""
    return {r[0].hex for r in central(url, "SELECT event_id FROM audit_logs" + where)}


@contextlib.contextmanager
def sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def buffer_state(path: Path) -> dict[str, int]:
    """Rows, highest id and PostgreSQL cursor of a replica's buffer file."""
    with sqlite(path) as conn:
        rows, top = conn.execute("SELECT count(*), COALESCE(max(id), 0) FROM audit_logs").fetchone()
        found = conn.execute("SELECT cursor FROM audit_forward WHERE sink = 'postgres'").fetchone()
    return {"rows": int(rows), "max_id": int(top), "cursor": int(found[0]) if found else 0}


def buffer_ids(path: Path) -> set[str]:
    with sqlite(path) as conn:
        return {r[0] for r in conn.execute("SELECT event_id FROM audit_logs")}


def assert_calls_ran(summary: dict[str, Any], calls: int) -> None:
    """Every call returned its own result or raised its own error: auditing changed nothing."""
    assert summary["wrong"] == 0, summary
    assert summary["ok"] + summary["failed"] == calls, summary
    assert summary["failed"] == calls // FAIL_EVERY, summary
    stats = summary["stats"]
    assert (stats["dropped"], stats["lost"]) == (0, 0), stats


def assert_caught_up(summary: dict[str, Any]) -> None:
    """forward() returned and stats() agrees: nothing waits, no error is left."""
    assert summary["forward_error"] is None, summary["forward_error"]
    stats = summary["stats"]
    assert stats["forward_lag_entries"] == 0, stats
    assert stats["forward_lag_seconds"] == 0, stats
    assert stats["forward_last_error"] is None, stats


def assert_delivered_once(url: str, buffers: dict[str, Path]) -> None:
    """Central rows per replica are exactly the buffer's rows, each once; cursors at the top."""
    counts = per_replica(url)
    assert set(counts) == set(buffers), counts
    for replica_id, path in buffers.items():
        state = buffer_state(path)
        rows, events, seqs, _ = counts[replica_id]
        assert rows == events == seqs == state["rows"], (replica_id, counts, state)
        assert state["cursor"] == state["max_id"], (replica_id, state)
        assert central_ids(url, replica_id) == buffer_ids(path), replica_id
    total = central(url, "SELECT count(*), count(DISTINCT event_id) FROM audit_logs")[0]
    assert total[0] == total[1] == sum(c[0] for c in counts.values())


def verify_central(url: str, tmp_path: Path) -> Any:
    """``verify()`` of every replica's chain, through the service reading PostgreSQL."""
    with AuditService(db_path=tmp_path / "reader.db", db_url=url) as svc:
        return svc.verify()


def _postgres_pids(server: Any) -> list[int]:
    """The postmaster and its children (backends, background workers)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def frozen(server: Any) -> Iterator[None]:
    """The server hangs (SIGSTOP): connections are accepted by the kernel, never answered."""
    # The postmaster first, so it forks no new backend; then its children as they
    # are now (one may exit between the listing and the signal).
    pids = []
    for pid in _postgres_pids(server):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            pids.append(pid)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# ---------------------------------------------------------------- a. outage


@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_replicas_ride_out_a_central_outage(
    server: Any, spawn: Spawn, tmp_path: Path, fault: str
) -> None:
    if fault == "hang" and not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the server's processes")
    url, calls = server.dsn, 4000
    buffers = {f"replica-{i}": tmp_path / f"replica-{i}.db" for i in range(4)}
    replicas = [
        spawn(
            db=path,
            url=url,
            replica_id=rid,
            calls=calls,
            rate=800,  # five seconds of calls: the outage falls in the middle
            batch=500,
            forward_wait=60,
        )
        for rid, path in buffers.items()
    ]

    def all_forwarding() -> bool:
        return central_count(url) > 0 and len(per_replica(url)) == len(buffers)

    wait_until(all_forwarding, what="rows from every replica")
    with contextlib.ExitStack() as outage:
        if fault == "crash":
            # in-flight batches may have committed without their acknowledgement
            server.stop("immediate")
            outage.callback(server.start)
        else:  # sends in flight block; new connections wait
            outage.enter_context(frozen(server))
        down = time.monotonic()
        at_stop = {rid: buffer_state(p)["max_id"] for rid, p in buffers.items()}

        def outage_served() -> bool:
            # the store stays out >= 3 s, and every replica keeps recording meanwhile
            grown = all(buffer_state(p)["max_id"] > at_stop[rid] for rid, p in buffers.items())
            return grown and time.monotonic() - down >= 3.0

        wait_until(outage_served, timeout=30, what="replicas writing through a 3 s outage")

    summaries = [r.summary() for r in replicas]
    for summary in summaries:
        assert_calls_ran(summary, calls)
        assert_caught_up(summary)
        if fault == "crash":  # the outage was really seen by every forwarder, and recovered
            assert summary["stats"]["forwarding"]["postgres"]["failures"] > 0, summary
    assert_delivered_once(url, buffers)
    for rid, (_, _, _, failures) in per_replica(url).items():
        assert failures == calls // FAIL_EVERY, rid
    report = verify_central(url, tmp_path)
    assert report.ok, report
    assert report.rows_checked == 4 * calls


# ---------------------------------------------------------------- b. SIGKILL


def test_forwarder_killed_mid_batch_resumes_without_loss_or_duplicates(
    server: Any, spawn: Spawn, tmp_path: Path
) -> None:
    url, total, rid = server.dsn, 50_000, "backlog"
    db = tmp_path / "backlog.db"
    backlog = spawn(db=db, calls=total).summary()  # no URL: the buffer fills, nothing forwards
    assert_calls_ran(backlog, total)
    assert buffer_state(db)["rows"] == total

    def forwarder(**options: Any) -> Replica:
        return spawn(db=db, url=url, replica_id=rid, forward_wait=60, **options)

    def check_after_kill(proc: Replica) -> dict[str, int]:
        proc.kill()
        assert proc.proc.returncode == -signal.SIGKILL
        rows, events = central(url, "SELECT count(*), count(DISTINCT event_id) FROM audit_logs")[0]
        assert rows == events, "a row was stored twice"
        state = buffer_state(db)
        assert 0 < rows < total, (rows, state)
        assert state["cursor"] <= rows, (rows, state)  # the cursor never runs ahead
        return {"central": rows, **state}

    kills = []
    # 1. big batches at full speed: the kill lands inside reading or sending the next one
    proc = forwarder(batch=10_000, max_rate=0)
    wait_until(lambda: central_count(url) > 0, what="the first batch")
    kills.append(check_after_kill(proc))

    # 2. the hardest window: the batch is committed centrally, the cursor not yet moved
    proc = forwarder(batch=5_000, max_rate=0, pause_after_send=60)
    sent = proc.next("sent")
    after = check_after_kill(proc)
    assert after["cursor"] < sent["last"] <= after["central"], (sent, after)
    kills.append(after)

    # 3. a paced drain, killed at an arbitrary point further on
    proc = forwarder(batch=2_000, max_rate=20_000)
    goal = kills[-1]["central"] + 10_000
    wait_until(lambda: central_count(url) >= goal, what=f"{goal} rows centrally")
    kills.append(check_after_kill(proc))
    # (the first kill may also have hit the window the second one aims at)
    assert kills[0]["central"] <= kills[1]["central"] < kills[2]["central"], kills

    # a new process on the same buffer only forwards: it re-sends from the cursor
    final = forwarder(max_rate=0).summary()
    assert_caught_up(final)
    assert final["stats"]["forwarding"]["postgres"]["forwarded"] == total - kills[-1]["cursor"]
    assert_delivered_once(url, {rid: db})
    report = verify_central(url, tmp_path)
    assert report.ok, report
    assert report.rows_checked == total


# ---------------------------------------------------------------- c. unreachable at start-up


def test_tools_run_while_the_central_store_is_unreachable_at_start_up(
    server: Any, spawn: Spawn, tmp_path: Path
) -> None:
    server.stop("fast")  # nothing listens on the port yet
    secret = "s3cret-pw"  # the server trusts local users; the password only must not leak
    url = f"postgresql://{server.user}:{secret}@127.0.0.1:{server.port}/postgres"
    calls, db = 2000, tmp_path / "late.db"
    proc = spawn(
        db=db, url=url, replica_id="late", calls=calls, rate=4000, probe=True, forward_wait=60
    )

    probe = proc.next("probe")
    assert probe["forward"].startswith("AuditTimeoutError"), probe
    stats = probe["stats"]
    error = stats["forward_last_error"]
    assert error, stats
    assert secret not in error
    assert secret not in probe["forward"]
    assert stats["forwarding"]["postgres"]["failures"] > 0, stats
    assert stats["forward_lag_entries"] == calls, stats
    assert stats["forward_lag_seconds"] > 0, stats
    assert central_count(url) == -1  # still down: nothing could be sent

    server.start()
    proc.send("go")
    summary = proc.summary()
    assert_calls_ran(summary, calls)
    assert_caught_up(summary)
    assert_delivered_once(url, {"late": db})
    assert secret not in proc.err()


# ---------------------------------------------------------------- d. close() with the store down


@pytest.mark.parametrize("fault", ["stopped", "hung"])
def test_close_with_the_central_store_down_keeps_the_backlog(
    server: Any, spawn: Spawn, tmp_path: Path, fault: str
) -> None:
    if fault == "hung" and not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the server's processes")
    url, calls, db = server.dsn, 3000, tmp_path / "closing.db"
    with contextlib.ExitStack() as outage:
        if fault == "stopped":
            server.stop("fast")
        else:
            outage.enter_context(frozen(server))
        proc = spawn(db=db, url=url, replica_id="closing", calls=calls, forward_timeout=2)
        # close() gives up forwarding after about forward_timeout: a bounded wait
        summary = proc.summary(timeout=60)
    assert summary["close_error"] is None, summary
    assert_calls_ran(summary, calls)
    state = buffer_state(db)
    assert state["rows"] == calls
    assert state["cursor"] < state["max_id"], state  # the backlog stayed in the buffer

    if fault == "stopped":
        server.start()
    final = spawn(db=db, url=url, replica_id="closing", forward_wait=60).summary()
    assert_caught_up(final)
    assert_delivered_once(url, {"closing": db})


# ---------------------------------------------------------------- e. one buffer, two processes


def test_two_processes_on_one_buffer_forward_one_at_a_time(
    server: Any, spawn: Spawn, tmp_path: Path
) -> None:
    url, calls, db = server.dsn, 3000, tmp_path / "shared.db"
    procs = [
        spawn(
            db=db, url=url, calls=calls, rate=1000, batch=200, forward_wait=60, sample_leader=True
        )
        for _ in range(2)
    ]
    summaries = [p.summary() for p in procs]
    for summary in summaries:
        assert_calls_ran(summary, calls)
        assert summary["forward_error"] is None, summary
    # whichever asked last waited for every row; the other one's snapshot may
    # include the last one's newest rows, still on their way then
    caught_up = [s for s in summaries if s["stats"]["forward_lag_entries"] == 0]
    assert caught_up, [s["stats"] for s in summaries]
    assert_caught_up(caught_up[0])

    (replica_id,) = per_replica(url)  # one buffer is one replica, whoever forwarded it
    assert_delivered_once(url, {replica_id: db})
    assert buffer_state(db)["rows"] == 2 * calls
    # every row was delivered (cursor moved past it) by exactly one of the two; the
    # first to finish may go on forwarding the other's rows until it closes
    delivered = [s["closed_stats"]["forwarding"]["postgres"]["forwarded"] for s in summaries]
    assert sum(delivered) == 2 * calls, delivered
    # and the lease was never held by both at once
    first, second = (s["leader_intervals"] for s in summaries)
    assert first or second
    for a_start, a_end in first:
        for b_start, b_end in second:
            assert a_end < b_start or b_end < a_start, (first, second)


def test_a_killed_lease_holder_is_taken_over(server: Any, spawn: Spawn, tmp_path: Path) -> None:
    url, calls, db = server.dsn, 4000, tmp_path / "shared.db"
    procs = [
        spawn(db=db, url=url, calls=calls, rate=1000, batch=200, forward_wait=60) for _ in "ab"
    ]

    def holder() -> int | None:
        with contextlib.suppress(sqlite3.Error), sqlite(db) as conn:
            row = conn.execute(
                "SELECT lease_owner FROM audit_forward WHERE sink = 'postgres'"
            ).fetchone()
            if row and row[0] and central_count(url) > 0:
                return int(str(row[0]).split(":")[1])  # host:pid:token
        return None

    pid = wait_until(holder, what="a lease holder that has forwarded")
    (victim,) = [p for p in procs if p.proc.pid == pid]
    (survivor,) = [p for p in procs if p is not victim]
    victim.kill()  # its lease is still unexpired: the survivor must see it is dead
    summary = survivor.summary()
    assert_calls_ran(summary, calls)
    assert_caught_up(summary)
    assert summary["stats"]["forwarding"]["postgres"]["forwarded"] > 0
    (replica_id,) = per_replica(url)
    assert_delivered_once(url, {replica_id: db})
