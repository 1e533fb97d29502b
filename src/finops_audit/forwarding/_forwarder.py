"""The forwarder: ships a replica's committed buffer rows to a sink, losing none.

One thread per sink. Each turn it reads the rows after its cursor (oldest
first, ``forward_batch_size`` at most), hands them to ``sink.send`` and only
then moves the cursor, which lives in the buffer file itself
(``audit_forward``) and so survives crashes and restarts:

* a crash before the cursor moved re-sends that batch; sinks are idempotent
  on ``event_id``, so the central store gets no duplicate;
* a failed send is retried with backoff (0.1 s doubling to 5 s, or what the
  sink's ``retry_after`` asks); rows wait in the buffer meanwhile, however
  long the outage, and are sent oldest first when the sink is back;
* a backlog is drained at ``forward_max_rate`` rows per second at most, so a
  long outage does not turn into a CPU storm that starves the tools;
* several processes sharing one buffer file elect one forwarder per sink with
  a lease in the same table (renewed each turn; taken over when it expires or
  its holder's process is gone), and every process's ``forward()`` waits on
  the shared cursor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .._chain import GENESIS
from .._lifecycle import on_exit
from ..exceptions import AuditTimeoutError
from .base import BUFFER_COLUMNS, BufferedRow, ForwardSink, ReplicaConflictError, ReplicaInfo

__all__ = ["ForwardStats", "Forwarder", "close_all"]

logger = logging.getLogger("finops_audit")

_LEASE_SECONDS = 15.0
_MAX_BACKOFF = 5.0
_SELECT = (
    "SELECT "
    + ", ".join(f'"{c}"' if c == "user" else c for c in BUFFER_COLUMNS)
    + " FROM audit_logs WHERE id > ? ORDER BY id LIMIT ?"
)
_PREV_HASH = """
SELECT COALESCE(
    (SELECT row_hash FROM audit_logs WHERE id = ?1),
    (SELECT last_hash FROM audit_checkpoints WHERE through_id = ?1 ORDER BY id DESC LIMIT 1))
"""
_OLDEST = "SELECT timestamp, execution_time_ms FROM audit_logs WHERE id > ? ORDER BY id LIMIT 1"
_FORWARD_TABLE = """
CREATE TABLE IF NOT EXISTS audit_forward (
    sink TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until REAL
)
"""


@dataclass(frozen=True)
class ForwardStats:
    """Health of one forwarder (one sink) of a service.

    ``lag_entries`` counts committed buffer rows not yet delivered and
    ``lag_seconds`` is the age of the oldest of them (0 when caught up);
    ``forwarded`` counts rows this process delivered; ``last_error`` is the
    latest failure, ``None`` once a batch goes through again; ``leader`` says
    whether this process holds the buffer's lease for this sink.
    """

    sink: str
    target: str
    cursor: int
    lag_entries: int
    lag_seconds: float
    forwarded: int
    failures: int
    last_error: str | None
    leader: bool
    running: bool


def _now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _ended_at(text: str, elapsed_ms: float | None) -> float:
    """When a call's entry became ready: its start plus its duration."""
    try:
        started = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError, AttributeError):
        return time.time()
    return started + (elapsed_ms or 0.0) / 1000.0


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Forwarder:
    """Forwards one buffer file to one sink from a daemon thread."""

    def __init__(
        self,
        buffer_path: Path,
        sink_factory: Callable[[], ForwardSink],
        *,
        sink_name: str,
        target: str,
        replica_id: str | None,
        batch_size: int,
        max_rate: float,
        interval: float,
        close_timeout: float,
        busy_timeout: float,
        maintenance: Callable[[Forwarder], None] | None = None,
        maintenance_interval: float = 3600.0,
    ) -> None:
        self.path = Path(buffer_path)
        self.sink_name = sink_name
        self.target = target
        self._sink_factory = sink_factory
        self._replica_id = replica_id
        self._batch = batch_size
        self._max_rate = max_rate
        self._interval = interval
        self._close_timeout = close_timeout
        self._busy = busy_timeout
        self._maintenance = maintenance
        self._maintenance_interval = maintenance_interval
        self._init_runtime()
        _all.add(self)

    def _init_runtime(self) -> None:
        self._pid = os.getpid()
        self._owner = f"{socket.gethostname()}:{self._pid}:{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop_at: float | None = None  # monotonic deadline once closing
        self._closed = False
        self._cursor = 0
        self._head = 0  # highest buffer id seen
        self._oldest_pending_ts: float | None = None
        self._forwarded = 0
        self._failures = 0
        self._last_error: str | None = None
        self._leader = False
        self._identity: tuple[int, int] | None = None
        self._buffer_error = False  # last_error came from the buffer, not the sink
        self.replica: ReplicaInfo | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start the thread (once per process; a forked child starts its own)."""
        if self._pid != os.getpid():
            self._init_runtime()
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(
                target=self._main, name=f"finops-audit-forward-{self.sink_name}", daemon=True
            )
            self._thread = thread
            thread.start()

    def notify(self) -> None:
        """New rows were committed: look now instead of at the next interval."""
        self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Forward what can be forwarded within ``timeout``, then stop. Never raises."""
        wait = self._close_timeout if timeout is None else timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._stop_at = time.monotonic() + wait
        self._stopping.set()
        self._wake.set()
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(wait + 5.0)
        lag = self._head - self._cursor
        if lag > 0:
            logger.warning(
                "finops_audit: %d audit entries are not yet forwarded to %s; they stay in %s "
                "and are sent at the next start (last error: %s)",
                lag,
                self.target,
                self.path,
                self._last_error,
            )

    def goal(self) -> int:
        """The last row committed to the buffer now: what a forward() waits for."""
        with contextlib.closing(self._connect()) as conn:
            return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_logs").fetchone()[0])

    def wait_forwarded(self, timeout: float, goal: int | None = None) -> None:
        """Return once every row committed to the buffer before the call is delivered.

        ``goal`` (from :meth:`goal`) fixes that row when waiting in slices.
        Judged on the cursor in the buffer file, which every process (and a
        forwarder that followed a replaced file) shares. Raises
        :class:`~finops_audit.AuditTimeoutError` naming the lag and the last
        error when that does not happen within ``timeout`` seconds.
        """
        self.start()
        deadline = time.monotonic() + timeout
        with contextlib.closing(self._connect()) as conn:
            if goal is None:
                goal = int(
                    conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_logs").fetchone()[0]
                )
            while True:
                shared = self._shared_cursor(conn)
                if goal <= 0 or shared >= goal:
                    # Another process may hold the lease: what this call saw is
                    # news to this forwarder's own counters, which stats() reads.
                    self._cursor = max(self._cursor, shared)
                    return
                now = time.monotonic()
                if now >= deadline:
                    raise self.late(timeout, goal - self._shared_cursor(conn))
                self._wake.set()
                with self._progress:
                    self._progress.wait(min(0.05, max(deadline - now, 0.001)))

    def late(self, timeout: float, behind: int) -> AuditTimeoutError:
        """The error of a forward() that ran out of time, ``behind`` entries short."""
        return AuditTimeoutError(
            f"forwarding to {self.target} did not catch up within {timeout:.3g}s: "
            f"{behind} entries behind; last error: {self._last_error}"
        )

    def behind(self, goal: int) -> int:
        """How many rows up to ``goal`` are not yet delivered (per the shared cursor)."""
        with contextlib.closing(self._connect()) as conn:
            return max(goal - self._shared_cursor(conn), 0)

    def _alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stats(self) -> ForwardStats:
        lag = max(self._head - self._cursor, 0)
        oldest = self._oldest_pending_ts
        age = max(time.time() - oldest, 0.0) if lag and oldest is not None else 0.0
        thread = self._thread
        return ForwardStats(
            sink=self.sink_name,
            target=self.target,
            cursor=self._cursor,
            lag_entries=lag,
            lag_seconds=age,
            forwarded=self._forwarded,
            failures=self._failures,
            last_error=self._last_error,
            leader=self._leader,
            running=thread is not None and thread.is_alive(),
        )

    # ------------------------------------------------------------------ the thread

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy * 1000)}")
        return conn

    def _main(self) -> None:
        sink: ForwardSink | None = None
        conn: sqlite3.Connection | None = None
        delay = 0.1
        next_maintenance = time.monotonic() + 5.0
        try:
            while True:
                closing = self._stop_at is not None
                if closing:
                    if time.monotonic() >= (self._stop_at or 0):
                        return
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            self._refresh_head(conn)
                        if self._caught_up():
                            return
                try:
                    if conn is not None and self._identity != _file_identity(self.path):
                        # The buffer was removed or replaced: the new file has its
                        # own ids and cursor; start over on it.
                        logger.warning("finops_audit: buffer %s was replaced", self.path)
                        self._release_lease(conn)
                        conn.close()
                        conn = None
                        self._cursor = self._head = 0
                        self._oldest_pending_ts = None
                    if conn is None:
                        conn = self._connect()
                        self._identity = _file_identity(self.path)
                        if not self._ready(conn):
                            # The writer (maybe another process's) has not made
                            # the schema yet: not an error, look again soon.
                            conn.close()
                            conn = None
                            self._pause(self._interval)
                            continue
                        self._prepare(conn)
                        if self._last_error is not None and self._buffer_error:
                            self._last_error = None
                    if not self._hold_lease(conn):
                        self._cursor = max(self._cursor, self._read_cursor(conn))
                        self._refresh_head(conn)
                        self._notify_progress()
                        self._pause(self._interval)
                        continue
                    if sink is None:
                        sink = self._sink_factory()
                    sent = self._turn(conn, sink)
                except sqlite3.Error as exc:
                    self._fail(f"reading the buffer {self.path}: {exc}")
                    self._buffer_error = True
                    if conn is not None:
                        conn.close()
                        conn = None
                    self._backoff(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                except ReplicaConflictError as exc:
                    self._buffer_error = False
                    replica = self.replica
                    if replica is None or "~" in replica.replica_id:
                        self._fail(str(exc))
                        self._backoff(delay)
                        delay = min(delay * 2, _MAX_BACKOFF)
                        continue
                    derived = f"{replica.replica_id}~{replica.buffer_id[:8]}"
                    logger.warning(
                        "finops_audit: replica id %s belongs to another buffer at %s; "
                        "this buffer (%s) is sent as %s",
                        replica.replica_id,
                        self.target,
                        self.path,
                        derived,
                    )
                    self.replica = ReplicaInfo(
                        derived, replica.buffer_id, replica.legacy_through, replica.scheme
                    )
                    continue
                except Exception as exc:
                    self._fail(str(exc) or type(exc).__name__)
                    self._buffer_error = False
                    retry_after = getattr(exc, "retry_after", None)
                    pause = delay
                    if isinstance(retry_after, (int, float)) and retry_after > 0:
                        pause = min(float(retry_after), 60.0)
                    self._backoff(pause)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                delay = 0.1
                if sent:
                    self._throttle(sent)
                else:
                    if self._maintenance is not None and time.monotonic() >= next_maintenance:
                        next_maintenance = time.monotonic() + self._maintenance_interval
                        try:
                            self._maintenance(self)
                        except Exception as exc:
                            logger.warning("finops_audit maintenance failed: %s", exc)
                    if not closing:
                        self._pause(self._interval)
        finally:
            self._leader = False
            if conn is not None:
                try:
                    self._release_lease(conn)
                finally:
                    conn.close()
            if sink is not None:
                try:
                    sink.close()
                except Exception:
                    logger.debug("closing the forwarding sink", exc_info=True)
            self._notify_progress()

    def _caught_up(self) -> bool:
        return self._cursor >= self._head

    def _pause(self, seconds: float) -> None:
        if self._stop_at is not None:
            seconds = min(seconds, max(self._stop_at - time.monotonic(), 0.0))
        self._wake.wait(seconds)
        self._wake.clear()

    def _backoff(self, seconds: float) -> None:
        """Wait after a failure: new commits and forward() do not cut it short.

        While closing it still waits (never a busy retry loop against a
        database that refuses), but not past the close deadline.
        """
        if self._stop_at is not None:
            time.sleep(min(seconds, max(self._stop_at - time.monotonic(), 0.0)))
        else:
            self._stopping.wait(seconds)
        self._wake.clear()

    def _throttle(self, sent: int) -> None:
        if self._max_rate <= 0 or self._stop_at is not None:
            return
        self._stopping.wait(sent / self._max_rate)  # new commits do not shorten it

    def _fail(self, message: str) -> None:
        first = self._last_error is None
        self._failures += 1
        self._last_error = message
        if first:
            logger.warning(
                "finops_audit cannot forward to %s (entries wait in %s): %s",
                self.target,
                self.path,
                message,
            )
        self._notify_progress()

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _ready(self, conn: sqlite3.Connection) -> bool:
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('audit_logs', 'audit_meta')"
        ).fetchone()[0]
        return int(found) == 2

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Tables, this buffer's identity (created once, kept in the file)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_FORWARD_TABLE)
            conn.execute(
                "INSERT OR IGNORE INTO audit_forward (sink, cursor, updated_at) VALUES (?, 0, ?)",
                (self.sink_name, _now_text()),
            )
            meta = dict(conn.execute("SELECT key, value FROM audit_meta").fetchall())
            buffer_id = meta.get("buffer_id")
            if buffer_id is None:
                buffer_id = secrets.token_hex(16)
                conn.execute(
                    "INSERT INTO audit_meta (key, value, signature) VALUES ('buffer_id', ?, '')",
                    (buffer_id,),
                )
            default_id = meta.get("replica_id")
            if default_id is None:
                default_id = f"{socket.gethostname()}-{buffer_id[:8]}"
                conn.execute(
                    "INSERT INTO audit_meta (key, value, signature) VALUES ('replica_id', ?, '')",
                    (default_id,),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        legacy = int(meta.get("legacy_through", "0") or 0)
        scheme = 2 if meta.get("scheme") == "2" else 1  # the rows' key scheme (_sqlite_meta)
        self.replica = ReplicaInfo(self._replica_id or default_id, buffer_id, legacy, scheme)
        self._cursor = max(self._cursor, self._read_cursor(conn))
        self._refresh_head(conn)

    def _shared_cursor(self, conn: sqlite3.Connection) -> int:
        try:
            return self._read_cursor(conn)
        except sqlite3.OperationalError:  # the forwarder has not made its table yet
            return 0

    def _read_cursor(self, conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "SELECT cursor FROM audit_forward WHERE sink = ?", (self.sink_name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _refresh_head(self, conn: sqlite3.Connection) -> None:
        self._head = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_logs").fetchone()[0])
        if self._head > self._cursor:
            row = conn.execute(_OLDEST, (self._cursor,)).fetchone()
            self._oldest_pending_ts = _ended_at(row[0], row[1]) if row else None
        else:
            self._oldest_pending_ts = None

    def _hold_lease(self, conn: sqlite3.Connection) -> bool:
        """Take or renew this sink's lease on the buffer; False if another process has it."""
        now = time.time()
        row = conn.execute(
            "SELECT lease_owner, lease_until FROM audit_forward WHERE sink = ?",
            (self.sink_name,),
        ).fetchone()
        owner, until = (row[0], row[1]) if row else (None, None)
        if owner == self._owner and until is not None and until - now > _LEASE_SECONDS / 2:
            self._leader = True
            return True
        if owner not in (None, self._owner) and until is not None and until > now:
            host, _, rest = str(owner).partition(":")
            pid_text = rest.partition(":")[0]
            if not (host == socket.gethostname() and pid_text.isdigit()):
                self._leader = False
                return False
            pid = int(pid_text)
            if pid == self._pid:
                # Another service of this process on the same buffer: it leads
                # while its thread runs (two forwarders would send twice).
                if any(f._owner == owner and f._alive() for f in list(_all) if f is not self):
                    self._leader = False
                    return False
            elif _pid_alive(pid):
                self._leader = False
                return False
        cur = conn.execute(
            "UPDATE audit_forward SET lease_owner = ?, lease_until = ? "
            "WHERE sink = ? AND (lease_owner IS ? OR lease_owner IS ?)",
            (self._owner, now + _LEASE_SECONDS, self.sink_name, owner, self._owner),
        )
        self._leader = cur.rowcount == 1
        return self._leader

    def _release_lease(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(
                "UPDATE audit_forward SET lease_owner = NULL, lease_until = NULL "
                "WHERE sink = ? AND lease_owner = ?",
                (self.sink_name, self._owner),
            )
        except sqlite3.Error:
            logger.debug("releasing the forwarding lease", exc_info=True)

    def _turn(self, conn: sqlite3.Connection, sink: ForwardSink) -> int:
        """Send one batch after the cursor; the number of rows sent (0: nothing new)."""
        self._wake.clear()
        cursor = self._read_cursor(conn)
        self._cursor = max(self._cursor, cursor)
        self._refresh_head(conn)  # lag is right even while sends fail
        raw = conn.execute(_SELECT, (cursor, self._batch)).fetchall()
        if not raw:
            self._notify_progress()
            return 0
        if any(r[1] is None for r in raw):
            # rows written by an older version after the upgrade: give them ids once
            conn.execute(
                "UPDATE audit_logs SET event_id = lower(hex(randomblob(16))) "
                "WHERE id > ? AND id <= ? AND event_id IS NULL",
                (cursor, raw[-1][0]),
            )
            raw = conn.execute(_SELECT, (cursor, self._batch)).fetchall()
        rows = [BufferedRow(*r) for r in raw]
        prev = conn.execute(_PREV_HASH, (cursor,)).fetchone()
        prev_hash = (prev[0] if prev else None) or GENESIS
        assert self.replica is not None
        sink.send(self.replica, rows, prev_hash)
        last = rows[-1].seq
        moved = conn.execute(
            "UPDATE audit_forward SET cursor = ?, updated_at = ? "
            "WHERE sink = ? AND cursor = ? AND lease_owner = ?",
            (last, _now_text(), self.sink_name, cursor, self._owner),
        ).rowcount
        if moved != 1:  # lost the lease meanwhile: the new holder goes on from its cursor
            self._leader = False
            return len(rows)
        if self._last_error is not None:
            logger.warning("finops_audit is forwarding to %s again", self.target)
            self._last_error = None
        self._cursor = last
        self._forwarded += len(rows)
        if last >= self._head:
            self._refresh_head(conn)
        else:
            nxt = conn.execute(_OLDEST, (last,)).fetchone()
            self._oldest_pending_ts = _ended_at(nxt[0], nxt[1]) if nxt else None
        self._notify_progress()
        return len(rows)

    def min_cursor(self, sinks: tuple[str, ...]) -> int:
        """The lowest cursor of ``sinks`` in this buffer: rows above it are not all delivered.

        Only the sinks configured now count: a destination removed from the
        settings must not pin the buffer forever.
        """
        marks = ", ".join("?" for _ in sinks)
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(
                f"SELECT sink, cursor FROM audit_forward WHERE sink IN ({marks})", sinks
            ).fetchall()
        found = {name: int(cursor) for name, cursor in rows}
        return min(found.get(name, 0) for name in sinks) if sinks else 0


_all: weakref.WeakSet[Forwarder] = weakref.WeakSet()


def close_all() -> None:
    """Close every forwarder of this process not closed yet (at interpreter exit)."""
    for forwarder in list(_all):
        if forwarder._pid == os.getpid():
            forwarder.close()


# After every writer drained at interpreter exit, forwarders deliver what they can.
on_exit(close_all)
