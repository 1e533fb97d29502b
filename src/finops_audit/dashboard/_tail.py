"""The live tail: one poller shared by every open stream, and the SSE stream of one browser.

Whoever writes the trail (this process, another process on the same file,
another replica through PostgreSQL) commits rows with growing ids, so "what is
new" is ``id > last``. One :class:`Poller` task asks that every
``poll_interval`` seconds while at least one stream is open, and hands each
stream the same batch: ten streams cost one query. A batch says which ids it
covers, ``(prev, last]``; a stream that missed one (its buffer was full, it
connected late, it resumes from ``Last-Event-ID``) reads the gap from the store
with its own filters, so it never misses an entry and never sends one twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sse_starlette import ServerSentEvent

from ..models import AuditLogEntry
from ..service import AuditService
from ..storage.base import LogQuery
from ._filters import Filters
from ._reader import filtered_query, latest_id, matches, rows_after
from ._rows import frame, tail_page

__all__ = ["Batch", "Poller", "entry_json", "frame", "stream_events"]

#: Rows one poll (or one catch-up page) reads at most.
PAGE = 500
#: Batches a slow stream may hold before it falls back to reading the gap itself.
BUFFERED_BATCHES = 64


@dataclass(frozen=True)
class Batch:
    """Every committed entry with ``prev < id <= last``, as rows and as SSE frames.

    Each entry is encoded once here, whatever the number of streams; a stream
    sends the frames of a batch that pass its filters as one write, and a stream
    without filters that is up to date sends ``joined``, the whole batch, as is.
    """

    prev: int
    last: int
    rows: list[dict[str, Any]]
    frames: list[bytes]
    joined: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "joined", b"".join(self.frames))


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[Batch] = field(default_factory=lambda: asyncio.Queue(BUFFERED_BATCHES))
    #: A batch was refused because ``queue`` was full: the stream must read the gap.
    overflowed: bool = False


class Poller:
    """Polls the trail for new ids while streams are open; stops when the last one leaves."""

    def __init__(self, service: AuditService, interval: float) -> None:
        self._service = service
        self._interval = interval
        self._subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[int] | None = None
        self.last = 0
        self.polls = 0

    @property
    def streams(self) -> int:
        return len(self._subscribers)

    async def subscribe(self) -> tuple[_Subscriber, int]:
        """A new subscriber and a committed id (every row at or below it exists)."""
        sub = _Subscriber()
        self._subscribers.add(sub)
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            self._task = loop.create_task(self._run(self._ready), name="finops-audit-poller")
        assert self._ready is not None
        try:
            mark = await asyncio.shield(self._ready)
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub, max(mark, self.last)

    def unsubscribe(self, sub: _Subscriber) -> None:
        self._subscribers.discard(sub)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._subscribers.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, ready: asyncio.Future[int]) -> None:
        try:
            self.last = max(self.last, await latest_id(self._service))
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            return
        ready.set_result(self.last)
        everything = LogQuery(limit=PAGE)
        while self._subscribers:
            try:
                read = await tail_page(self._service, everything, self.last)
                if read is None:  # a store without the tuple read: dicts, encoded here
                    page = await rows_after(self._service, everything, self.last)
                    read = page, [frame(row) for row in page]
            except Exception:
                read = [], []  # a store hiccup: try again next tick, streams keep their place
            self.polls += 1
            page, frames = read
            if page:
                batch = Batch(self.last, page[-1]["id"], page, frames)
                self.last = batch.last
                for sub in list(self._subscribers):
                    try:
                        sub.queue.put_nowait(batch)
                    except asyncio.QueueFull:
                        sub.overflowed = True  # it reads the gap from the store itself
            if len(page) < PAGE:
                await asyncio.sleep(self._interval)


def entry_json(entry: AuditLogEntry) -> str:
    return orjson.dumps(entry.model_dump(mode="json")).decode()


@dataclass
class _Cursor:
    """What one stream has sent (``sent``) and up to where nothing is missing (``covered``)."""

    sent: int
    covered: int


async def stream_events(
    service: AuditService,
    poller: Poller,
    filters: Filters,
    resume_from: int | None,
    heartbeat: float,
) -> AsyncIterator[ServerSentEvent | bytes]:
    """The events of one stream: every matching entry with ``id > resume_from`` then live ones.

    Without ``resume_from`` the stream starts at the newest committed entry.
    A ``heartbeat`` event (no id) goes out after ``heartbeat`` seconds of silence.
    Entries are yielded as encoded frames, several per chunk.
    """
    query = filtered_query(service, filters, PAGE)
    sub, mark = await poller.subscribe()
    try:
        start = mark if resume_from is None else resume_from
        cursor = _Cursor(start, start)  # below ``mark``: resume by reading the store
        yield ServerSentEvent(
            orjson.dumps({"resumed_from": start, "streams": poller.streams}).decode(),
            event="hello",
            retry=1000,
        )
        quiet_since = time.monotonic()
        while True:
            if cursor.covered < mark or (sub.overflowed and sub.queue.empty()):
                # A gap this stream reads itself: a resume, or batches its full buffer refused.
                sub.overflowed = False
                async for chunk in _catch_up(service, query, cursor, poller):
                    yield chunk
                    quiet_since = time.monotonic()
                mark = cursor.covered
            timeout = max(heartbeat - (time.monotonic() - quiet_since), 0.0)
            try:
                batch = await asyncio.wait_for(sub.queue.get(), timeout)
            except asyncio.TimeoutError:
                yield ServerSentEvent(
                    orjson.dumps({"last_id": poller.last, "at": time.time()}).decode(),
                    event="heartbeat",
                )
                quiet_since = time.monotonic()
                continue
            if batch.prev > cursor.covered:
                # Entries were missed before this batch (its buffer was full): read them first.
                async for chunk in _catch_up(service, query, cursor, poller):
                    yield chunk
                    quiet_since = time.monotonic()
            chunk = _select(batch, cursor, filters, query.pseudonym)
            cursor.covered = max(cursor.covered, batch.last)
            mark = cursor.covered
            if chunk:
                yield chunk
                quiet_since = time.monotonic()
    finally:
        poller.unsubscribe(sub)


def _select(batch: Batch, cursor: _Cursor, filters: Filters, pseudonym: str | None) -> bytes:
    """The frames of ``batch`` this stream has not sent and its filters pass, as one chunk."""
    everything = filters == _NO_FILTERS
    if everything and cursor.sent <= batch.prev:
        cursor.sent = batch.last
        return batch.joined
    picked = []
    for row, encoded in zip(batch.rows, batch.frames, strict=True):
        if row["id"] > cursor.sent and (everything or matches(row, filters, pseudonym)):
            picked.append(encoded)
            cursor.sent = row["id"]
    return b"".join(picked)


_NO_FILTERS = Filters()


async def _catch_up(
    service: AuditService, query: LogQuery, cursor: _Cursor, poller: Poller
) -> AsyncIterator[bytes]:
    """Matching entries above ``cursor.covered`` read from the store, a page per chunk."""
    mark = poller.last  # every row up to here was committed before the reads below
    while True:
        page = await rows_after(service, query, max(cursor.covered, cursor.sent))
        fresh = [row for row in page if row["id"] > cursor.sent]
        if fresh:
            cursor.sent = fresh[-1]["id"]
            yield b"".join(frame(row) for row in fresh)
        if page:
            cursor.covered = max(cursor.covered, page[-1]["id"])
        if len(page) < query.limit:
            cursor.covered = max(cursor.covered, mark)
            return
