"""Process-wide lifecycle: interpreter exit, ``os.fork()``, signals, exit hooks.

Every writer of the process is known here, so that

* at interpreter exit every running writer drains before threads are joined
  (aiosqlite's reader threads are not daemons, and Python 3.12 cannot start
  threads in ``atexit``), and then the exit hooks run in the order they were
  registered: whoever needs a last word after the writers drained (the
  forwarders deliver what they can) registers it with :func:`on_exit`; the
  writer itself imports none of them;
* a SIGTERM or SIGINT flushes every writer (:func:`flush_all`, installed by
  ``_signals``), and a signal about to end the process reports what dies with
  it (:func:`report_unwritten`);
* after ``os.fork()`` the child's writers restart fresh and unstarted; entries
  the parent had queued stay the parent's to write.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _signals

if TYPE_CHECKING:
    from ._writer import AuditWriter

__all__ = ["flush_all", "on_exit", "report_unwritten", "running", "track"]

logger = logging.getLogger("finops_audit")

_all_writers: weakref.WeakSet[AuditWriter] = weakref.WeakSet()
#: Writers started and not closed: the ones exit and signals must drain.
running: set[AuditWriter] = set()
_exit_hooks: list[Callable[[], None]] = []


def track(writer: AuditWriter) -> None:
    """Know ``writer`` for the fork hook (weakly: a dropped writer is forgotten)."""
    _all_writers.add(writer)


def on_exit(hook: Callable[[], None]) -> None:
    """Run ``hook()`` at interpreter exit, after every writer drained (once per hook)."""
    if hook not in _exit_hooks:
        _exit_hooks.append(hook)


def _close_all_at_exit() -> None:
    """Drain every running writer before the interpreter joins threads, then run
    the exit hooks (the forwarders deliver what they can within their timeout)."""
    for writer in list(running):
        try:
            writer.close()
        except Exception as exc:
            logger.error("finops_audit could not drain at exit: %s", exc)
    for hook in list(_exit_hooks):
        try:
            hook()
        except Exception as exc:
            logger.error("finops_audit exit hook %r failed: %s", hook, exc)


def flush_all(timeout: float) -> None:
    """Flush every running writer of this process, all within ``timeout`` seconds.

    A writer whose file cannot be opened is not waited for: nothing it holds
    can be written, and the signal that asked for the flush must not wait on it.
    """
    deadline = time.monotonic() + timeout
    markers = []
    for writer in list(running):
        if writer._running and not writer._closed and not writer._unopenable:
            markers.append(writer.request_flush())
    for marker in markers:
        try:
            marker.future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            logger.error("finops_audit could not flush within %.1fs", timeout)
            return


def report_unwritten(signum: int) -> None:
    """Last words before a signal ends the process: one line per writer that
    still holds entries (they die with it), with their count."""
    for writer in list(running):
        if writer._pid != os.getpid():
            continue
        pending = writer.stats().pending
        if pending:
            logger.error(
                "finops_audit: %d audit entries could not be written to %s before signal %d "
                "ended the process: %s",
                pending,
                writer._store.describe(),
                signum,
                writer._last_error or "the flush did not finish in time",
            )


_signals.set_last_words(report_unwritten)


def _after_fork_in_child() -> None:
    running.clear()
    for writer in list(_all_writers):
        writer._after_fork()


_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    # Runs before non-daemon threads (aiosqlite's readers) are joined, when starting
    # threads is still allowed on every supported Python.
    _register(_close_all_at_exit)
else:  # pragma: no cover - every CPython 3.10-3.13 has it
    import atexit

    atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
