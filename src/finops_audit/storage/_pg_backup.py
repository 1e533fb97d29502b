"""Back up the central trail: ``pg_dump --format=custom`` of the audit tables.

The dump runs on a snapshot exported by a ``REPEATABLE READ`` transaction
that also counts the rows, so the reported count is exactly what the file
holds even while forwarders go on inserting. The password reaches
``pg_dump`` through ``PGPASSWORD``, never its command line (``ps`` shows
that to every user of the machine).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .._pgserver import find_pg_bin
from ..exceptions import AuditStorageError
from ..maintenance import BackupReport

__all__ = ["backup", "find_pg_dump"]

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


def find_pg_dump() -> Path | None:
    """``pg_dump`` on ``PATH``, else next to the PostgreSQL server binaries."""
    found = shutil.which("pg_dump")
    if found:
        return Path(found)
    folder = find_pg_bin()
    if folder is not None and (folder / "pg_dump").exists():
        return folder / "pg_dump"
    return None


async def backup(
    conn: Connection,
    url: str,
    dest: Path,
    error: Callable[[str, BaseException], AuditStorageError],
) -> BackupReport:
    """``pg_dump`` of the audit tables at ``dest`` (new, mode 0600) from one snapshot."""
    pg_dump = find_pg_dump()
    if pg_dump is None:
        raise AuditStorageError(
            "backing up a central store needs pg_dump (the PostgreSQL client programs, "
            "Debian: apt-get install postgresql-client); none was found on PATH"
        )
    _create_private(dest)
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)  # never on the command line, where ps shows it
    try:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT pg_export_snapshot(), current_schema(), (SELECT count(*) FROM audit_logs)"
            )
            ((snapshot, schema, rows),) = await cur.fetchall()
            quoted = '"' + str(schema).replace('"', '""') + '"'
            proc = await asyncio.create_subprocess_exec(
                str(pg_dump),
                "--format=custom",
                "--no-password",
                f"--snapshot={snapshot}",
                f"--file={dest}",
                *(f"--table={quoted}.{pattern}" for pattern in _DUMPED),
                f"--dbname={make_conninfo('', **params)}",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise error("back up", RuntimeError(f"pg_dump failed: {stderr.decode().strip()}"))
    except BaseException:
        _remove(dest)
        raise
    return BackupReport(path=dest, bytes=_private_size(dest), rows=int(rows))


def _create_private(dest: Path) -> None:
    """Create ``dest`` empty with mode 0600; refuse one that exists."""
    if dest.exists():
        raise AuditStorageError(f"backup destination {dest} already exists")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise AuditStorageError(f"cannot create backup {dest}: {exc}") from exc


def _remove(dest: Path) -> None:
    dest.unlink(missing_ok=True)


def _private_size(dest: Path) -> int:
    os.chmod(dest, 0o600)  # pg_dump truncates the file it is given, keeping its mode
    return dest.stat().st_size


#: pg_dump table patterns: the trail with its partitions and id sequence, the
#: replicas' registrations, the purge checkpoints, the delivery anchors.
_DUMPED = ("audit_logs*", "audit_replicas", "audit_checkpoints*", "audit_anchors")
