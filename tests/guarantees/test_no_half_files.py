"""Failed writes leave no half-finished files; reads work where nothing may be written.

``backup`` and ``export`` write a private temporary file beside DEST and rename
it when complete. Each failure is real: a full tmpfs, a tmpfs remounted
read-only, a SIGINT in the middle of a large export. After each, DEST is as it
was (absent, or its old bytes), no temporary file is left, and a retry with
the same name works.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
from click.testing import CliRunner

from finops_audit import AuditService, audit_tool_sync
from finops_audit.cli import main
from tests.guarantees._support import CHILD_TIMEOUT, child_env, mount, wait_until


def _trail(path: Path, calls: int, *, chain: bool = False) -> None:
    with AuditService(path, hash_chain=chain) as service:

        @audit_tool_sync(name="lookup", service=service)
        def lookup(account: str, note: str) -> str:
            return account

        for i in range(calls):
            lookup(account=f"acct-{i}", note="n" * 200)


def _bulk(path: Path, rows: int) -> None:
    """``rows`` more rows, inserted directly (fast), into a trail made by the service."""
    conn = sqlite3.connect(path)
    try:
        params = orjson.dumps({"account": "acct", "note": "x" * 100}).decode()
        with conn:
            conn.executemany(
                "INSERT INTO audit_logs (timestamp, tool_name, parameters, status) "
                "VALUES ('2025-06-01T12:00:00.000000+00:00', 'bulk', ?, 'SUCCESS')",
                ((params,) for _ in range(rows)),
            )
    finally:
        conn.close()


def _fill(folder: Path) -> Path:
    """Fill the tmpfs at ``folder`` to the last byte; returns the filler to delete."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_to_a_full_disk_leaves_nothing_and_the_retry_works(
    tmp_path: Path, tmpfs: Path
) -> None:
    db = tmp_path / "trail.db"
    _trail(db, 40)
    dest = tmpfs / "backup.db"
    filler = _fill(tmpfs)
    code, output = _cli("backup", "--db", str(db), str(dest))
    assert code == 1
    assert f"cannot write backup {dest}" in output
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler"]  # no DEST, no temporary file
    filler.unlink()
    code, output = _cli("backup", "--db", str(db), str(dest))  # the same name
    assert code == 0, output
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    with contextlib.closing(sqlite3.connect(dest)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0] == 40


def test_backup_into_a_read_only_folder_leaves_nothing(tmp_path: Path, tmpfs: Path) -> None:
    db = tmp_path / "trail.db"
    _trail(db, 3)
    mount("-o", "remount,ro", str(tmpfs))
    code, output = _cli("backup", "--db", str(db), str(tmpfs / "backup.db"))
    assert code == 1
    assert "backup.db" in output
    assert list(tmpfs.iterdir()) == []


def test_backup_never_replaces_an_existing_file(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    _trail(db, 3)
    dest = tmp_path / "backup.db"
    dest.write_text("keep me")
    code, output = _cli("backup", "--db", str(db), str(dest))
    assert code == 1
    assert "already exists" in output
    assert dest.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.db", "trail.db"]


def test_export_to_a_full_disk_keeps_the_old_file(tmp_path: Path, tmpfs: Path) -> None:
    db = tmp_path / "trail.db"
    _trail(db, 5)
    _bulk(db, 5000)  # far more than the 256 KiB tmpfs holds
    out = tmpfs / "out.jsonl"
    out.write_text("the previous export\n")
    before = _digest(out)
    code, output = _cli("export", "--db", str(db), str(out))
    assert code == 1
    assert f"cannot write {out}" in output
    assert _digest(out) == before
    assert sorted(p.name for p in tmpfs.iterdir()) == ["out.jsonl"]


def test_export_into_a_read_only_folder_leaves_nothing(tmp_path: Path, tmpfs: Path) -> None:
    db = tmp_path / "trail.db"
    _trail(db, 3)
    mount("-o", "remount,ro", str(tmpfs))
    code, output = _cli("export", "--db", str(db), str(tmpfs / "out.csv"))
    assert code == 1
    assert "out.csv" in output
    assert list(tmpfs.iterdir()) == []


def test_export_is_private_and_whole(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    _trail(db, 7)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    os.chmod(out, 0o644)
    code, output = _cli("export", "--db", str(db), str(out))
    assert code == 0, output
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert len(out.read_text().splitlines()) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "trail.db"]


def test_an_interrupted_export_leaves_nothing(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) while a large export streams: no OUTPUT, no temporary file."""
    db = tmp_path / "trail.db"
    _trail(db, 1)
    _bulk(db, 300_000)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "finops_audit.cli", "export", "--db", str(db), str(out)],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the temporary file exists and has rows in it: the export is mid-stream
        wait_until(
            lambda: any(p.stat().st_size > 0 for p in tmp_path.glob(".out.jsonl.*.tmp")),
            timeout=CHILD_TIMEOUT,
            what="the export to start writing",
        )
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trail.db"]


def test_a_trail_on_a_read_only_mount_is_readable(tmpfs: Path) -> None:
    """No -wal/-shm can be made there, and no writer can run: read immutable, create nothing."""
    db = tmpfs / "trail.db"
    _trail(db, 4, chain=True)
    assert sorted(p.name for p in tmpfs.iterdir()) == ["trail.db"]
    mount("-o", "remount,ro", str(tmpfs))
    code, output = _cli("logs", "--db", str(db), "--json")
    assert code == 0, output
    assert len(output.splitlines()) == 4
    code, output = _cli("verify", "--db", str(db))
    assert code == 0, output
    assert sorted(p.name for p in tmpfs.iterdir()) == ["trail.db"]
