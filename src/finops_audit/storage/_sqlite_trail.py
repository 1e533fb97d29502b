"""Is this SQLite file a finops_audit trail, and can this code read it?

Why this exists: pointed at the wrong file (another application's database,
an empty file, a trail written by a newer finops_audit), a reader or writer
must say so in one line and leave the file's bytes alone. Before, opening any
file created our tables in it and switched it to WAL.

* :func:`check_trail` decides from the schema alone, with reads only, before
  anything is written: the schema version (``PRAGMA user_version``) must not
  be newer than the one this code writes (``sqlite.SCHEMA_VERSION``), and an
  ``audit_logs`` table must have the design note's columns (version 0 trails
  are ours too).
* :func:`readonly_uri` opens a file with ``mode=ro``. A read-only connection
  to a WAL file whose ``-wal`` and ``-shm`` are absent creates them and leaves
  them behind; :func:`tidy_companions` removes them the way SQLite's last
  connection does (a plain connection that reads and closes: SQLite deletes
  them only if it holds the only connection and, the WAL being empty, writes
  nothing to the database). Where they cannot be created at all (a read-only
  folder or mount) and no ``-wal`` exists, no writer can be running either, so
  ``immutable=1`` is safe: :func:`connect_readonly` falls back to it.
* :func:`compat_objects` lets a read-only connection read an older trail
  without upgrading it: TEMP views and tables (in SQLite's temp schema, never
  the file) stand in for the columns and tables added since version 0.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..exceptions import AuditStorageError
from .base import CALLER_COLUMNS

__all__ = [
    "SHAPE_SQL",
    "TrailShape",
    "check_trail",
    "companions_exist",
    "compat_objects",
    "connect_readonly",
    "newer_schema_error",
    "open_trail_reader",
    "open_trail_readonly",
    "read_error",
    "readonly_uri",
    "shape_of",
    "tidy_companions",
]

logger = logging.getLogger("finops_audit")

#: The design note's columns (schema version 0): what makes ``audit_logs`` ours.
SEED_COLUMNS = (
    "id",
    "timestamp",
    "tool_name",
    "parameters",
    "status",
    "error_message",
    "execution_time_ms",
)
#: Columns added since version 0, NULL in a read of an older trail.
ADDED_COLUMNS = ("row_hash", *CALLER_COLUMNS, "event_id")
OUR_TABLES = ("audit_logs", "audit_meta", "audit_checkpoints", "audit_forward")

#: ``(table, column)`` of every table but SQLite's own (``check_trail``'s ``rows``).
SHAPE_SQL = (
    "SELECT m.name, p.name FROM sqlite_schema AS m "
    "LEFT JOIN pragma_table_info(m.name) AS p "
    "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
)

_COMPAT_TABLES = {
    "audit_meta": "key TEXT PRIMARY KEY, value TEXT NOT NULL, signature TEXT NOT NULL",
    "audit_checkpoints": (
        "id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, through_id INTEGER NOT NULL, "
        "last_hash TEXT NOT NULL, rows_purged INTEGER NOT NULL, signature TEXT NOT NULL"
    ),
    "audit_forward": (
        "sink TEXT PRIMARY KEY, cursor INTEGER NOT NULL, updated_at TEXT NOT NULL, "
        "lease_owner TEXT, lease_until REAL"
    ),
}


@dataclass(frozen=True)
class TrailShape:
    """What :func:`check_trail` found: the schema version and our tables' columns."""

    version: int
    tables: dict[str, frozenset[str]]

    @property
    def empty(self) -> bool:
        return not self.tables


def _version() -> str:
    from .. import __version__  # late: the package imports this module

    return __version__


def newer_schema_error(path: Path, version: int, known: int) -> AuditStorageError:
    return AuditStorageError(
        f"{path} has schema version {version}; this finops_audit ({_version()}) reads up to "
        f"{known}; upgrade finops_audit"
    )


def check_trail(
    path: Path,
    version: int,
    rows: Iterable[tuple[str, str | None]],
    *,
    known: int,
    creating: bool,
) -> TrailShape:
    """Decide from ``user_version`` and ``(table, column)`` rows (:data:`SHAPE_SQL`) whether
    ``path`` is a trail this code (schema ``known``) may read, or, ``creating``, make.

    Raises :class:`AuditStorageError` with one line naming the file otherwise.
    ``creating`` accepts an empty database (the writer makes the schema); a
    reader calls an empty database what it is: no trail.
    """
    if version > known:
        raise newer_schema_error(path, version, known)
    tables: dict[str, set[str]] = {}
    for table, column in rows:
        tables.setdefault(table, set())
        if column is not None:
            tables[table].add(column)
    ours = {name: frozenset(cols) for name, cols in tables.items() if name in OUR_TABLES}
    shape = TrailShape(version, ours)
    if "audit_logs" in tables:
        missing = [c for c in SEED_COLUMNS if c not in tables["audit_logs"]]
        if missing:
            raise AuditStorageError(
                f"{path} is not a finops_audit trail: its audit_logs table has no "
                f"{', '.join(missing)} column{'s' if len(missing) > 1 else ''}; left unchanged"
            )
        return shape
    if not tables:
        if creating:
            return shape
        raise AuditStorageError(f"{path} is not a finops_audit trail: the database is empty")
    names = sorted(tables)
    listed = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    raise AuditStorageError(
        f"{path} is not a finops_audit trail: it holds another application's tables "
        f"({listed}); left unchanged"
    )


def compat_objects(shape: TrailShape) -> list[str]:
    """TEMP objects that let a read-only connection read ``shape`` as the current schema."""
    statements: list[str] = []
    columns = shape.tables.get("audit_logs", frozenset())
    if any(c not in columns for c in ADDED_COLUMNS):
        select = ", ".join(
            [*SEED_COLUMNS, *(c if c in columns else f"NULL AS {c}" for c in ADDED_COLUMNS)]
        )
        statements.append(f"CREATE TEMP VIEW audit_logs AS SELECT {select} FROM main.audit_logs")
    for table, definition in _COMPAT_TABLES.items():
        if table not in shape.tables:
            statements.append(f"CREATE TEMP TABLE {table} ({definition})")
    return statements


def readonly_uri(path: Path, *, immutable: bool = False) -> str:
    """A ``file:`` URI that opens ``path`` read-only (``immutable``: without locks)."""
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def companions_exist(path: Path) -> bool:
    """True if ``path-wal`` or ``path-shm`` exists (a writer is, or was, using the file)."""
    return any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))


def _cannot_open(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "unable to open" in text or "readonly" in text or "read-only" in text


def connect_readonly(path: Path, *, busy_ms: int = 5000) -> sqlite3.Connection:
    """A read-only ``sqlite3`` connection on ``path`` that has read its schema.

    Falls back to ``immutable=1`` when the WAL's companions cannot be created
    and no ``-wal`` exists (nothing can be writing).
    """
    if not path.exists():
        raise AuditStorageError(f"no audit database at {path}")
    conn = sqlite3.connect(
        readonly_uri(path), uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
        return conn
    except sqlite3.Error as exc:
        conn.close()
        if not _cannot_open(exc) or Path(f"{path}-wal").exists():
            raise read_error(path, exc) from exc
    logger.debug("opening %s immutable: its WAL files cannot be created here", path)
    conn = sqlite3.connect(
        readonly_uri(path, immutable=True), uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        conn.close()
        raise read_error(path, exc) from exc
    return conn


def read_error(path: Path, exc: BaseException) -> AuditStorageError:
    """The one line for a file SQLite cannot read (a non-SQLite file says so)."""
    if "not a database" in str(exc).lower():
        return AuditStorageError(f"{path} is not a finops_audit trail: not a SQLite database")
    return AuditStorageError(f"cannot read audit database {path}: {exc}")


def shape_of(conn: sqlite3.Connection, path: Path, *, known: int) -> TrailShape:
    """:func:`check_trail` (for a reader) on a plain ``sqlite3`` connection."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        rows = conn.execute(SHAPE_SQL).fetchall()
    except sqlite3.DatabaseError as exc:
        raise read_error(path, exc) from exc
    return check_trail(path, version, rows, known=known, creating=False)


def tidy_companions(path: Path) -> None:
    """Remove the ``-wal``/``-shm`` a read-only connection left, if no one else uses them.

    Call only when they were absent before that connection opened. SQLite
    deletes them when the last connection closes; a read-only one cannot, so
    one plain connection reads and closes. If another connection is open,
    SQLite leaves them (they are in use); nothing is written to the database
    because the WAL holds no frames.
    """
    wal = Path(f"{path}-wal")
    try:
        if not companions_exist(path) or (wal.exists() and wal.stat().st_size > 0):
            return
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            return
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        logger.debug("could not remove the WAL files a read of %s left", path, exc_info=True)


def open_trail_readonly(path: Path, *, known: int, busy_ms: int = 5000) -> sqlite3.Connection:
    """A read-only connection on the trail at ``path``, older schemas shown as the current one.

    Raises :class:`AuditStorageError` (naming the file) when ``path`` is not a
    trail this code reads; the file is not changed either way.
    """
    conn = connect_readonly(path, busy_ms=busy_ms)
    try:
        shape = shape_of(conn, path, known=known)
        conn.execute("PRAGMA temp_store = MEMORY")
        for statement in compat_objects(shape):
            conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


def open_trail_reader(path: Path, *, known: int, busy_ms: int = 5000) -> sqlite3.Connection:
    """A plain reading connection beside the writer, after the same checks."""
    if not path.exists():
        raise AuditStorageError(f"no audit database at {path}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        shape_of(conn, path, known=known)
    except BaseException:
        conn.close()
        raise
    return conn
