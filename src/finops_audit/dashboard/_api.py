"""The JSON API behind the page: every number is one of the library's analytics calls.

All endpoints read; none changes the trail (``POST /api/verify`` only walks
the hash chain, and is a POST so that no prefetch or crawler runs it). A bad
query value is a 400 with ``{"error": "..."}`` saying what to send instead.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from .._writer import GAP_TOOL_NAME
from ..exceptions import AuditClosedError, AuditConfigError
from ..service import AuditService
from ..storage.base import LogQuery
from ._filters import FilterError, Filters, bucket_param, int_param, parse_filters
from ._reader import entries_after, entry_by_id, filtered_query, latest_id
from ._tail import Poller, entry_json, stream_events

__all__ = ["Api"]

Handler = Callable[[Request], Awaitable[Response]]

#: Buckets the page's chart aims for when it picks the bucket size itself.
_TARGET_BUCKETS = 120
_NICE_BUCKETS = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400]


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status, media_type="application/json")


def _errors(handler: Handler) -> Handler:
    """Bad input -> 400 with the message; a closed service -> 503; never a bare 500 for input."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except (FilterError, AuditConfigError) as exc:
            return _json({"error": str(exc)}, 400)
        except AuditClosedError as exc:
            return _json({"error": str(exc)}, 503)

    return run


class Api:
    """The endpoints, bound to one service, one poller and the last verify result."""

    def __init__(self, service: AuditService, poller: Poller, heartbeat: float) -> None:
        self.service = service
        self.poller = poller
        self.heartbeat = heartbeat
        self.last_verify: dict[str, Any] | None = None

    def routes(self) -> dict[str, tuple[Handler, list[str]]]:
        get = ["GET"]
        return {
            "/api/logs": (_errors(self.logs), get),
            "/api/logs/{entry_id}": (_errors(self.entry), get),
            "/api/tools": (_errors(self.tools), get),
            "/api/timeline": (_errors(self.timeline), get),
            "/api/errors": (_errors(self.errors), get),
            "/api/slowest": (_errors(self.slowest), get),
            "/api/health": (_errors(self.health), get),
            "/api/verify": (_errors(self.verify), ["POST"]),
            "/api/stream": (_errors(self.stream), get),
        }

    async def logs(self, request: Request) -> Response:
        """Newest first; with ``after_id``: the entries above it in id order (polling clients)."""
        params = request.query_params
        filters = parse_filters(params)
        limit = int_param(params, "limit", 100, 1, 1000)
        after = params.get("after_id")
        if after is not None:
            after_id = int_param(params, "after_id", 0, 0, 2**62)
            query = filtered_query(self.service, filters, limit)
            page = await entries_after(self.service, query, after_id)
            last = page[-1].id if page else after_id
            return _entries(page, last_id=last, more=len(page) == limit)
        offset = int_param(params, "offset", 0, 0, 1_000_000)
        mark = await latest_id(self.service)  # the live stream resumes from here
        page = await self.service.aget_logs(limit=limit, offset=offset, **filters.logs())
        return _entries(page, last_id=mark, more=len(page) == limit)

    async def entry(self, request: Request) -> Response:
        raw = request.path_params["entry_id"]
        entry_id = int_param({"id": raw}, "id", 0, 1, 2**62)
        entry = await entry_by_id(self.service, entry_id)
        if entry is None:
            return _json({"error": f"no entry {entry_id} in {self.service.trail}"}, 404)
        return Response(entry_json(entry), media_type="application/json")

    async def tools(self, request: Request) -> Response:
        filters = parse_filters(request.query_params)
        started = time.perf_counter()
        stats = await self.service.atool_stats(**filters.window())
        elapsed = (time.perf_counter() - started) * 1000
        return _json({"tools": [s.model_dump(mode="json") for s in stats], "elapsed_ms": elapsed})

    async def timeline(self, request: Request) -> Response:
        params = request.query_params
        filters = parse_filters(params)
        auto = params.get("bucket", "auto") in ("", "auto")
        bucket = await self._auto_bucket(filters) if auto else bucket_param(params, "1h")
        buckets = await self.service.acalls_over_time(bucket=bucket, **filters.window())
        if auto and buckets:
            # Calls fill only part of the window (a fresh trail, a quiet day): zoom in on them.
            first = replace(filters, since=max(buckets[0].start, filters.since or buckets[0].start))
            finer = await self._auto_bucket(first)
            if finer < bucket:
                bucket = finer
                buckets = await self.service.acalls_over_time(bucket=bucket, **first.window())
        return _json(
            {
                "bucket_seconds": int(bucket.total_seconds()),
                "buckets": [b.model_dump(mode="json") for b in buckets],
            }
        )

    async def _auto_bucket(self, filters: Filters) -> timedelta:
        """A bucket that splits the window into about a hundred bars."""
        end = filters.until or datetime.now(timezone.utc)
        start = filters.since
        if start is None:
            oldest = await entries_after(self.service, LogQuery(limit=1), 0)
            start = oldest[0].timestamp if oldest else end - timedelta(hours=1)
        span = max((end - start).total_seconds(), 1.0)
        wanted = span / _TARGET_BUCKETS
        seconds = next((n for n in _NICE_BUCKETS if n >= wanted), None)
        if seconds is None:
            seconds = 86400 * int(-(-wanted // 86400))
        return timedelta(seconds=seconds)

    async def errors(self, request: Request) -> Response:
        params = request.query_params
        filters = parse_filters(params)
        limit = int_param(params, "limit", 10, 1, 200)
        groups = await self.service.aerror_groups(limit=limit, **filters.window())
        return _json({"errors": [g.model_dump(mode="json") for g in groups]})

    async def slowest(self, request: Request) -> Response:
        params = request.query_params
        filters = parse_filters(params)
        limit = int_param(params, "limit", 10, 1, 200)
        calls = await self.service.aslowest_calls(limit=limit, **filters.window())
        return _entries(calls)

    async def health(self, request: Request) -> Response:
        stats = self.service.stats()
        gaps = await self.service._aask(lambda s: s.count(LogQuery(tool_name=GAP_TOOL_NAME)))
        values = asdict(stats)
        return _json(
            {
                "trail": self.service.trail,
                "central": self.service.central,
                "stats": values,
                "gap_rows": gaps,
                "last_verify": self.last_verify,
                "streams": self.poller.streams,
                "last_id": self.poller.last,
            }
        )

    async def verify(self, request: Request) -> Response:
        started = time.perf_counter()
        report = await self.service.averify()
        self.last_verify = {
            **report.model_dump(mode="json"),
            "checked_at": datetime.now(timezone.utc).isoformat(),
            "elapsed_ms": (time.perf_counter() - started) * 1000,
        }
        return _json(self.last_verify)

    async def stream(self, request: Request) -> Response:
        params = request.query_params
        filters = parse_filters(params)
        resume = request.headers.get("last-event-id") or params.get("after_id")
        resume_from = None
        if resume is not None and resume != "":
            resume_from = int_param({"Last-Event-ID": resume}, "Last-Event-ID", 0, 0, 2**62)
        filtered_query(self.service, filters, 1)  # a bad filter is a 400 now, not mid-stream
        events = stream_events(self.service, self.poller, filters, resume_from, self.heartbeat)
        return EventSourceResponse(
            events, ping=self.heartbeat, headers={"Cache-Control": "no-store"}
        )


def _entries(page: list[Any], **extra: Any) -> Response:
    body = b",".join(entry_json(e).encode() for e in page)
    head = orjson.dumps(extra)[:-1] + (b',"entries":[' if extra else b'"entries":[')
    return Response(head + body + b"]}", media_type="application/json")
