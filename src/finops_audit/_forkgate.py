"""Keep ``os.fork()`` out of SQLite work, and never finalise what a child inherits.

Why: SQLite keeps per-process lock bookkeeping in C globals, one record per
database file (its unix VFS ``unixInodeInfo`` and the shared-memory node of a
WAL file). ``fork()`` copies that memory, but not the threads that would have
finished the work. A child forked while the parent's writer was inside a
transaction inherits a record saying "a connection of this process holds the
WAL write lock" that nothing in the child will ever release: every write the
child makes to that file then fails "database is locked", for good.
(Reproduced: 0 of the child's rows landed.) Forked during a read, the child's
own reads could skip the real ``fcntl`` lock the parent relies on.

So, like the ``logging`` module's locks, a gate is taken around fork:

* Every operation of a writer on its store (open, a batch, retention, a query
  run on the writer's loop, close) is done inside :meth:`ForkGate.held`.
* ``before`` (``os.register_at_fork``) closes the gate to new operations and
  waits, at most :data:`FORK_WAIT` seconds, for those in progress to end;
  the fork then happens between transactions, where the inherited records say
  only "a shared lock is held", which a second connection shares without harm.
  ``after_in_parent`` opens the gate again; ``after_in_child`` makes a new one.
* The child starts each writer over with a new store and connections (made
  lazily, at its first call). The inherited connection objects are never
  closed or finalised, only leaked (:func:`never_finalize`):

  - closing one sends its close to aiosqlite's thread, which the child does
    not have: ``await close()`` would hang;
  - finalising one (``sqlite3_close``) would roll back a transaction the
    parent still has open, and a WAL rollback rewrites the wal-index hash
    tables in the ``-shm`` file, which is mapped *shared* with the parent:
    the child would corrupt the parent's view of its own transaction;
  - it is *not* true that closing the inherited file descriptors releases the
    parent's locks: POSIX ``fcntl`` locks belong to a process and are not
    inherited by ``fork()``, and SQLite defers closing a descriptor while
    another connection of the process holds locks on the same file.

Operations waited for longer than :data:`FORK_WAIT` (a write stuck behind
another process's lock) let the fork go on; the child then logs that its
writes to that file may fail, and any it cannot make are counted as lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["FORK_WAIT", "ForkGate", "gate", "never_finalize"]

logger = logging.getLogger("finops_audit")

#: Longest a fork waits for SQLite work in progress (seconds).
FORK_WAIT = 10.0


class ForkGate:
    """A count of SQLite operations in progress that a fork waits to reach zero."""

    def __init__(self) -> None:
        #: Set in a child forked while an operation was still in progress.
        self.unsafe = False
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._forking = False

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Around one store operation; waits (without blocking the loop) while a fork runs."""
        delay = 0.0005
        while True:
            if self._lock.acquire(blocking=False):
                try:
                    if not self._forking:
                        self._active += 1
                        break
                finally:
                    self._lock.release()
            # A fork is in progress (it holds the lock, or waits for others).
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._idle.notify_all()

    def before_fork(self) -> None:
        self._lock.acquire()
        self._forking = True
        deadline = time.monotonic() + FORK_WAIT
        while self._active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.unsafe = True
                return
            self._idle.wait(remaining)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self.unsafe = False
        self._lock.release()

    def after_fork_in_child(self) -> None:
        self._reset()  # the inherited lock is held by the parent's forking thread
        if self.unsafe:
            logger.warning(
                "finops_audit: this process was forked while an audit database operation was "
                "still in progress after %.0fs; its audit writes to that file may fail "
                "(and are then counted as lost)",
                FORK_WAIT,
            )


#: The process's one gate.
gate = ForkGate()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=gate.before_fork,
        after_in_parent=gate.after_fork_in_parent,
        after_in_child=gate.after_fork_in_child,
    )

_leaked: list[object] = []


def never_finalize(obj: object) -> None:
    """Keep ``obj`` alive to the very end, past interpreter shutdown's module cleanup."""
    _leaked.append(obj)
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    except Exception:  # pragma: no cover - not CPython: the list reference must do
        logger.debug("cannot pin an inherited audit store", exc_info=True)
