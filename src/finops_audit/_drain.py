"""The drain loop and batching: queue to store, one transaction per batch.

The writer task loops: sleep (see ``_wakeup``), then write what is queued in
batches of ``batch_size`` through ``store.write_batch``. Nothing in a batch can
stop the writer: a row the database refuses is cleaned once, then written row
by row; a database that is unavailable is retried with backoff while the
entries stay queued; anything else costs that batch alone, counted lost with a
gap row (``_faults``). Durable waiters queued in a batch are released together
once it commits: one transaction, one fsync for all of them (group commit).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ._faults import is_data_error, sanitize
from ._forkgate import gate
from ._salvage import format_rows
from ._writer_state import WriterState
from ._writer_types import DurableMarker, Entry, FlushMarker, settle
from .storage.base import Row

__all__ = ["RETENTION_INTERVAL", "DrainMixin"]

logger = logging.getLogger("finops_audit")

#: Seconds between two retention purges (when ``retention_days`` is set).
RETENTION_INTERVAL = 3600.0


class DrainMixin(WriterState):
    """The writer task's loop, batching and writes."""

    async def _run(self) -> None:
        next_retention = time.monotonic()
        while True:
            try:
                await self._sleep(next_retention if self._retention is not None else None)
                await self._drain(everything=self._stopping)
            except Exception as exc:
                # The last resort: _drain contains its own failures, so this is
                # a bug. Log it (once an interval), pause so a fault that
                # repeats cannot spin, and go on: queued entries stay queued.
                self._log_once("finops_audit writer loop failed; it goes on", exc)
                await asyncio.sleep(min(self._interval, 0.05))
            if self._stopping and not self._queue:
                return
            if self._retention is not None and time.monotonic() >= next_retention:
                next_retention = time.monotonic() + RETENTION_INTERVAL
                try:
                    async with gate.held():
                        report = await self._retention(self._store)
                    logger.info("finops_audit retention: %s", report)
                except Exception as exc:
                    logger.warning("finops_audit retention purge failed: %r", exc)

    async def _drain(self, everything: bool = True) -> None:
        """Write what is queued, in batches.

        ``everything=False`` (the steady state) writes only what was queued
        when it began and leaves later arrivals to the next window: a writer
        that looped until the queue was empty would, at a moderate rate, chase
        every few new entries with a tiny batch and never sleep, and per-batch
        costs (thread hops, commits) would dominate. A full batch, a flush
        request or a durable waiter still wakes the writer at once.
        """
        if self._gap is not None:
            await self._write_gap()
        q = self._queue
        batch = self._batch
        popleft = q.popleft
        budget = len(q)
        while q and (everything or budget > 0):
            entries: list[Entry] = []
            durable: list[DurableMarker] = []
            marker: FlushMarker | None = None
            while q and len(entries) < batch:
                budget -= 1
                item = popleft()
                if type(item) is tuple:
                    entries.append(item)
                elif type(item) is DurableMarker:
                    entries.append(item.entry)
                    durable.append(item)
                    self._flush_requests = max(0, self._flush_requests - 1)
                else:
                    marker = item  # type: ignore[assignment]
                    break  # commit what came before it, then release its waiter
            self._inflight = len(entries)
            if not self._room.is_set():
                self._room.set()
            if entries:
                self._active = True
                started = time.perf_counter()
                self._write_started = time.monotonic()
                try:
                    committed = await self._write_entries(entries)
                except BaseException:
                    _release(durable, False)
                    raise
                finally:
                    self._write_started = None
                # Settled before the waiters run: a caller that reads stats()
                # right after its durable call returns sees its entry written.
                self._inflight = 0
                _release(durable, committed)
                if durable:
                    # The next group is expected about as large (decaying, so a
                    # crowd that left stops being waited for).
                    self._last_group = max(len(durable), int(self._last_group * 0.9))
                    self._last_commit = time.perf_counter() - started
                if self._adaptive:
                    self._adapt(len(entries), time.perf_counter() - started)
            self._inflight = 0
            if marker is not None:
                self._flush_requests = max(0, self._flush_requests - 1)
                if self._gap is not None:
                    await self._write_gap()  # a flush covers the drops made before it
                if not marker.future.done():
                    marker.future.set_result(None)

    async def _write_entries(self, entries: list[Entry]) -> bool:
        """Format and write one batch; nothing in it can stop the writer.

        Formatting is contained per entry (:mod:`finops_audit._salvage`);
        anything else that escapes ``_write`` (a bug) costs this batch alone:
        its entries are counted lost with a gap row, and the writer goes on.
        Retrying them could repeat the failure forever. Returns whether every
        entry of the batch was committed.
        """
        try:
            formatted = format_rows(self._formatter, entries)
            if formatted.sanitized or formatted.lost:
                self._note_unformattable(formatted.sanitized, formatted.lost, formatted.reasons)
            committed = True
            if formatted.rows:
                committed = await self._write(formatted.rows)
            return committed and not formatted.lost
        except Exception as exc:
            self._lose(len(entries), f"the writer failed on them ({type(exc).__name__})")
            self._log_once("finops_audit could not write a batch of audit entries", exc)
            return False
        except asyncio.CancelledError:
            raise  # the batch may have committed: _main drains what is still queued
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt... from a hook: the thread ends, but
            # the batch it held is counted, never silently gone.
            self._lose(len(entries), f"the writer stopped on them ({type(exc).__name__})")
            raise

    async def _write_gap(self) -> None:
        entry = self._gap_entry()
        if entry is not None:
            await self._write(self._formatter.rows([entry]), count_written=False)

    async def _write(self, rows: list[Row], *, count_written: bool = True) -> bool:
        """Write ``rows`` in one transaction, retrying while the database is unavailable.

        Returns ``False`` only when rows were given up on (counted lost).
        """
        delay = 0.01
        sanitized = False
        while True:
            try:
                async with gate.held():
                    await self._store.write_batch(rows)
            except Exception as exc:
                self._record_error(exc)
                if is_data_error(exc):
                    # Retrying cannot help a row the database refuses (e.g. a
                    # lone surrogate): clean the text once, then row by row.
                    if not sanitized:
                        rows = [sanitize(row) for row in rows]
                        sanitized = True
                        continue
                    return await self._write_one_by_one(rows, count_written)
                now = time.monotonic()
                if self._stopping and now >= self._give_up_at:
                    # Counted, not logged per batch: close() reports the total once.
                    self._lost += len(rows)
                    return False
                pause = delay if not self._stopping else min(delay, self._give_up_at - now)
                await self._backoff(max(pause, 0.001))
                delay = min(delay * 2, 1.0)
                continue
            if count_written:
                self._written += len(rows)
            if self._hooks is not None:
                self._hooks.committed()
            self._cleared()
            return True

    async def _write_one_by_one(self, rows: list[Row], count_written: bool) -> bool:
        every = True
        for row in rows:
            try:
                async with gate.held():
                    await self._store.write_batch([row])
            except Exception as exc:
                if not is_data_error(exc):
                    every = await self._write([row], count_written=count_written) and every
                    continue
                self._lost += 1
                every = False
                logger.error("finops_audit could not store an audit entry of %r: %r", row[1], exc)
            else:
                if count_written:
                    self._written += 1
        return every


def _release(durable: list[DurableMarker], committed: bool) -> None:
    """Resolve the durable waiters of one batch: all committed, or all told not
    (one ``call_soon_threadsafe`` per callers' loop, see :func:`settle`)."""
    if durable:
        settle(durable, None if committed else "the audit entry could not be committed")
