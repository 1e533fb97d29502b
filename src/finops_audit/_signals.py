"""Flush the trail when the process is told to stop (SIGTERM, SIGINT).

Python's default SIGTERM handling kills the process at once: no ``atexit``, no
``finally``; a prototype lost every pending entry (``DESIGN.md``). MCP clients
stop stdio servers with SIGTERM, so finops_audit installs a handler that
flushes every running writer and then does exactly what would have happened
without it:

* the previous handler was a Python callable (the host's own, or SIGINT's
  ``default_int_handler``): it is called, with the same arguments;
* it was ``SIG_DFL``: the default disposition is restored and the signal
  raised again, so the process dies of the signal with the usual status;
  just before, the entries that die with it are reported (one line, one count);
* it was ``SIG_IGN``: nothing more.

Handlers can only be installed from the main thread; :func:`install` is a no-op
elsewhere and when ``AUDIT_HANDLE_SIGNALS=false``. A host that installs its own
handlers later replaces ours; its graceful shutdown then drains the writer
through the exit hook.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["FLUSH_TIMEOUT", "install", "installed", "set_last_words"]

logger = logging.getLogger("finops_audit")

#: Seconds a signal flush may take. MCP clients send SIGKILL 2 s after SIGTERM.
FLUSH_TIMEOUT = 1.5

_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), signal.SIGINT) if s is not None)
_previous: dict[int, Any] = {}
_lock = threading.Lock()
_flush_all: Callable[[float], None] | None = None
_last_words: Callable[[int], None] | None = None


def set_last_words(report: Callable[[int], None]) -> None:
    """``report(signum)`` runs when the signal is about to end the process (SIG_DFL)."""
    global _last_words
    _last_words = report


def installed() -> bool:
    return bool(_previous)


def install(flush_all: Callable[[float], None]) -> bool:
    """Install the flushing handlers once per process; returns whether they are in place."""
    global _flush_all
    if threading.current_thread() is not threading.main_thread():
        return installed()
    with _lock:
        _flush_all = flush_all
        for signum in _SIGNALS:
            current = signal.getsignal(signum)
            if current is _handle:
                continue
            try:
                signal.signal(signum, _handle)
            except (ValueError, OSError):  # not the main interpreter, or unsupported
                continue
            _previous[signum] = current
    return installed()


def _handle(signum: int, frame: FrameType | None) -> None:
    flush = _flush_all
    if flush is not None:
        try:
            flush(FLUSH_TIMEOUT)
        except BaseException as exc:  # never let the audit layer change how we stop
            logger.error("finops_audit could not flush on signal %d: %r", signum, exc)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        last = _last_words
        if last is not None:
            try:
                last(signum)
            except BaseException as exc:
                logger.error("finops_audit could not report unwritten entries: %r", exc)
        signal.signal(signum, signal.SIG_DFL)
        _previous.pop(signum, None)
        signal.raise_signal(signum)
