"""rotate-keys: resumable after SIGKILL, nothing lost, verify passes throughout.

The rotation runs as a real ``finops-audit rotate-keys`` process, in small
transactions, and is killed with SIGKILL once it has re-wrapped part of the
trail; a writer keeps adding rows meanwhile. A rerun finishes the job: every
value then decrypts with the new key alone, the old key's wraps are gone from
the file's bytes, and ``verify`` passes before, during and after (with no key
and with the keyring).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from finops_audit import AuditService, audit_tool_sync

from ..operations._util import cli_env, raw_bytes, run_cli
from ._crypto import RING_BOTH, RING_NEW_ONLY, RING_OLD

ROWS = 4000
_NEW_ROWS = 'SELECT COUNT(*) FROM audit_logs WHERE instr(parameters, \'"kid":"k-new"\') > 0'


def _fill(db_path: Path, ring: str, count: int, start: int = 0) -> None:
    # small batches: many data keys, so rotation re-wraps many distinct wraps
    with AuditService(db_path, encryption_keys=ring, batch_size=50, queue_size=500) as service:

        @audit_tool_sync(service=service)
        def lookup(n: int, account: str) -> None:
            return None

        for n in range(start, start + count):
            lookup(n, f"acct-{n:06d}")


def _usage(db_path: Path) -> dict[str, int]:
    with AuditService(db_path, read_only=True) as service:
        return service.key_usage().rows_by_key


def _check_all(db_path: Path, ring: str, total: int) -> None:
    with AuditService(db_path, read_only=True, encryption_keys=ring) as service:
        seen = sorted(e.parameters["n"] for e in service.iter_logs())
        bad = [
            e
            for e in service.iter_logs()
            if e.parameters["account"] != f"acct-{e.parameters['n']:06d}"
        ]
        report = service.verify()
    assert seen == list(range(total))
    assert bad == []
    assert report.ok, report.problem


def _verify_without_key(db_path: Path) -> None:
    with AuditService(db_path, read_only=True) as service:
        report = service.verify()
    assert report.ok, report.problem


def test_status_counts_rows_per_key_id(db_path: Path, tmp_path: Path) -> None:
    _fill(db_path, RING_OLD, 30)
    _fill(db_path, RING_BOTH, 12, start=30)
    env = cli_env(AUDIT_DB_PATH=str(db_path), AUDIT_ENCRYPTION_KEYS=RING_BOTH)
    status = run_cli("rotate-keys", "--status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert "k-old: 30 rows" in status.stdout
    assert "k-new: 12 rows (encrypts new entries)" in status.stdout
    as_json = run_cli(
        "rotate-keys", "--status", "--json", cwd=tmp_path, env=cli_env(AUDIT_DB_PATH=str(db_path))
    )
    assert json.loads(as_json.stdout)["rows_by_key"] == {"k-new": 12, "k-old": 30}
    done = run_cli("rotate-keys", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "re-wrapped 30 rows under key k-new" in done.stdout
    assert _usage(db_path) == {"k-new": 42}
    again = run_cli("rotate-keys", cwd=tmp_path, env=env)
    assert "re-wrapped 0 rows" in again.stdout


def test_rotation_without_the_old_key_leaves_rows_and_says_so(
    db_path: Path, tmp_path: Path
) -> None:
    _fill(db_path, RING_OLD, 5)
    env = cli_env(AUDIT_DB_PATH=str(db_path), AUDIT_ENCRYPTION_KEYS=RING_NEW_ONLY)
    done = run_cli("rotate-keys", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "5 rows name a key that is not in the keyring" in done.stderr
    assert _usage(db_path) == {"k-old": 5}
    refused = run_cli("rotate-keys", cwd=tmp_path, env=cli_env(AUDIT_DB_PATH=str(db_path)))
    assert refused.returncode == 1
    assert "needs the keyring" in refused.stderr


def test_sigkill_mid_rotation_then_rerun(db_path: Path, tmp_path: Path) -> None:
    _fill(db_path, RING_OLD, ROWS)
    old_wraps = set(re.findall(rb'"kid":"k-old","k":"([^"]+)"', raw_bytes(db_path)))
    assert len(old_wraps) > 10
    _check_all(db_path, RING_OLD, ROWS)  # before
    env = cli_env(
        AUDIT_DB_PATH=str(db_path), AUDIT_ENCRYPTION_KEYS=RING_BOTH, AUDIT_BUSY_TIMEOUT="120"
    )
    # The test holds the write lock except for short spells: the rotation moves
    # on only then, so the SIGKILL below surely lands mid-rotation.
    lock = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    deadline = time.monotonic() + 60

    def take_lock() -> None:
        # spin, never sleep: SQLite's busy handler backs off and would let the
        # rotation (which retakes the lock right after each commit) run to the end
        while True:
            try:
                lock.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                assert time.monotonic() < deadline, "the write lock never came free"

    take_lock()
    proc = subprocess.Popen(
        [sys.executable, "-m", "finops_audit.cli", "rotate-keys", "--batch-size", "5"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    watch = sqlite3.connect(db_path, isolation_level=None)

    def rewrapped() -> int:
        return int(watch.execute(_NEW_ROWS).fetchone()[0])

    try:
        while rewrapped() < 50:
            lock.execute("ROLLBACK")
            seen = rewrapped()
            while rewrapped() == seen:  # bounded poll: the rotation moved on
                assert proc.poll() is None, "the rotation ended early"
                assert time.monotonic() < deadline, "the rotation made no progress"
            take_lock()
        # during: the rotation waits for the lock; the trail reads and verifies
        during = _usage(db_path)
        assert during.get("k-old", 0) > 0
        assert during.get("k-new", 0) > 0
        _verify_without_key(db_path)
        _check_all(db_path, RING_BOTH, ROWS)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        lock.execute("ROLLBACK")
    finally:
        watch.close()
        lock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _usage(db_path)
    assert partial.get("k-old", 0) > 0
    assert sum(partial.values()) == ROWS
    _check_all(db_path, RING_BOTH, ROWS)  # after the kill: nothing lost
    _verify_without_key(db_path)
    # the rerun goes on while a writer adds rows under the new key
    rerun = subprocess.Popen(
        [sys.executable, "-m", "finops_audit.cli", "rotate-keys", "--batch-size", "5"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _fill(db_path, RING_BOTH, 100, start=ROWS)
    _out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert _usage(db_path) == {"k-new": ROWS + 100}
    # the old key can go: every value decrypts with the new key alone
    _check_all(db_path, RING_NEW_ONLY, ROWS + 100)
    _verify_without_key(db_path)
    data = raw_bytes(db_path)
    assert not [w for w in old_wraps if w in data], "an old wrap is still in the file"
