"""Durable mode (``AUDIT_DURABILITY=commit``): a call returns once its entry is committed.

For those who must not lose one entry: the default hand-off returns at once
and a SIGKILL loses what was not yet written (``max_unwritten_seconds`` of
it). Here the decorated call queues its entry with a :class:`DurableMarker`,
wakes the writer at once and waits for the commit: a sync tool in its own
thread (on a locked ``threading.Lock`` the writer releases), an async tool
without blocking its loop (on a future of that loop, which the writer settles
with one ``call_soon_threadsafe`` per loop per batch). Every waiter queued
when the writer starts a batch shares its one transaction and its one fsync
(group commit), so the cost per call is about one commit's latency, not one
commit per call.

If the entry is not committed within ``block_timeout`` (a dead or locked
database), or was dropped, the policy decides:

* default: the call returns (or raises the tool's own exception) as if
  nothing happened; ``stats().durable_timeouts`` counts it, a warning is
  logged at most once an interval, and the entry stays queued (it is still
  written if the database comes back; a dropped one is marked by a gap row);
* ``AUDIT_FAIL_CLOSED=true``: the call raises :class:`AuditUnavailableError`
  (from the tool's own exception, if any). The tool has already run: the
  audit records a finished call, so what fails closed is the answer.

These functions are chosen at decoration time; the default path never sees them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._deadlines import deadlines_for
from ._faults import WARN_INTERVAL
from ._writer_types import DurableMarker, Entry
from .exceptions import AuditQueueFullError, AuditUnavailableError

if TYPE_CHECKING:
    from ._writer import AuditWriter

__all__ = ["DurableOffer", "commit", "commit_async", "durable_hand_off", "durable_offer"]

logger = logging.getLogger("finops_audit")

_last_warning = -WARN_INTERVAL


_FAILURE = "FAILURE"


def _tool_error(entry: Entry) -> BaseException | None:
    """The tool's own exception: a failed call's entry is handed over inside the
    decorator's ``except`` block, where it is the exception being handled."""
    return sys.exc_info()[1] if entry[4] == _FAILURE else None


def durable_hand_off(
    get_writer: Callable[[], AuditWriter], on_error: Callable[[Exception], None]
) -> Callable[[Entry], None]:
    """The sync decorator's hand-off in durable mode (chosen at decoration time)."""

    def hand_off(entry: Entry) -> None:
        try:
            writer = get_writer()
        except Exception as exc:
            on_error(exc)
            return
        commit(writer, entry, _tool_error(entry))

    return hand_off


class DurableOffer:
    """What the async decorator awaits in durable mode: ``asubmit_wait(entry)``."""

    __slots__ = ("_writer",)

    def __init__(self, writer: AuditWriter) -> None:
        self._writer = writer

    async def asubmit_wait(self, entry: Entry) -> None:
        await commit_async(self._writer, entry, _tool_error(entry))


def durable_offer(
    get_writer: Callable[[], AuditWriter], on_error: Callable[[Exception], None]
) -> Callable[[Entry], DurableOffer | None]:
    """The async decorator's ``offer`` in durable mode: always something to await."""

    def offer(entry: Entry) -> DurableOffer | None:
        try:
            return DurableOffer(get_writer())
        except AuditQueueFullError:
            raise
        except Exception as exc:
            on_error(exc)
            return None

    return offer


def commit(writer: AuditWriter, entry: Entry, tool_error: BaseException | None = None) -> None:
    """Hand ``entry`` over and wait (this thread) until it is committed; see the module doc."""
    marker = DurableMarker(entry)
    writer.submit_durable(marker)
    timeout = writer._settings.block_timeout
    _confirm(writer, marker, marker.wait(timeout), timeout, tool_error)


async def commit_async(
    writer: AuditWriter, entry: Entry, tool_error: BaseException | None = None
) -> None:
    """:func:`commit` for async tools: waits without blocking the event loop.

    The marker's future belongs to this loop; the writer settles it (``True``)
    and the loop's shared deadline timer (:mod:`finops_audit._deadlines`)
    ``False``. A cancelled caller cancels only that future: its entry stays
    queued and is written.
    """
    marker = DurableMarker(entry, asyncio.get_running_loop())
    if not writer.try_submit_durable(marker):
        await writer.asubmit_wait(marker)
        writer._wake_for_durable()
    timeout = writer._settings.block_timeout
    future = marker.future
    assert future is not None
    if future.done():
        settled = future.result()
    else:
        loop = future.get_loop()
        deadlines = deadlines_for(loop, timeout)
        if deadlines is None:
            timer = loop.call_later(timeout, _time_out, future)
            try:
                settled = await future
            finally:
                timer.cancel()
        else:
            deadlines.add(loop, future)  # one timer for all of this loop's waiters
            try:
                settled = await future
            finally:
                deadlines.prune()
    _confirm(writer, marker, settled, timeout, tool_error)


def _confirm(
    writer: AuditWriter,
    marker: DurableMarker,
    settled: bool,
    timeout: float,
    tool_error: BaseException | None,
) -> None:
    """After the wait: nothing to do if committed, else the policy decides."""
    if not settled:
        _unconfirmed(writer, f"it was not committed within block_timeout ({timeout}s)", tool_error)
    elif marker.error is not None:  # dropped, or given up on at close
        _unconfirmed(writer, marker.error, tool_error)


def _time_out(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


def _unconfirmed(writer: AuditWriter, why: str, tool_error: BaseException | None) -> None:
    """Count it; raise under fail-closed, else warn (at most once an interval)."""
    global _last_warning
    with writer._lock:
        writer._durable_timeouts += 1
        total = writer._durable_timeouts
    where = writer._store.describe()
    fault = writer._last_error or "no database error recorded"
    if writer._settings.fail_closed:
        raise AuditUnavailableError(
            f"the audit entry of this call could not be committed to {where}: {why} "
            f"(last error: {fault}). The tool has run, but AUDIT_FAIL_CLOSED=true withholds "
            "its result until the trail can be written. Fix the database (see "
            "AuditService.stats().last_error), or raise AUDIT_BLOCK_TIMEOUT for a slow disk."
        ) from tool_error
    now = time.monotonic()
    if now - _last_warning >= WARN_INTERVAL:
        _last_warning = now
        logger.warning(
            "finops_audit durable mode: a call returned before its audit entry was committed "
            "to %s: %s (last error: %s; %d such calls so far)",
            where,
            why,
            fault,
            total,
        )
