"""The service's reading side: entries, analytics, exports and verification.

Why a module of its own: what a reader of the trail asks (logs, counts,
pages, per-tool statistics, the chain's verdict) changes for other reasons
than how the trail is written or maintained, and reads are what users call
most. Every call here takes arguments already checked by ``_query_args`` and
goes through :class:`~finops_audit._store_access.StoreAccess`, so each one
sees every call that returned (read-your-writes) and gets encrypted fields
opened or marked the same way. Pages are keyset pages by id: memory stays
bounded whatever the size of the trail.
"""

from __future__ import annotations

import asyncio
import csv
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO

import orjson

from ._anchors import Anchor, AnchorFileError, read_anchors
from ._chain import Chainer
from ._decrypting import open_row, verify_sealed
from ._store_access import StoreAccess
from .analytics import ErrorGroup, TimeBucket, ToolStats
from .exceptions import AuditConfigError
from .maintenance import VerifyReport
from .models import AuditLogEntry
from .storage.base import LogQuery

__all__ = ["TrailReader"]


class TrailReader:
    """Answers queries for one service handle; each method takes a validated query."""

    def __init__(self, access: StoreAccess, verifier: Chainer) -> None:
        self._access = access
        self._verifier = verifier

    # ------------------------------------------------------------------ entries

    def logs(self, query: LogQuery) -> list[AuditLogEntry]:
        return self._access.read(lambda store: store.query(query))

    async def alogs(self, query: LogQuery) -> list[AuditLogEntry]:
        return await self._access.aread(lambda store: store.query(query))

    def count(self, query: LogQuery) -> int:
        return self._access.read(lambda store: store.count(query))

    def iter_logs(self, query: LogQuery) -> Iterator[AuditLogEntry]:
        """Every entry matching ``query``, oldest first, ``query.limit`` a page."""
        self._access.catch_up()
        after = 0
        while True:
            page = self._access.ask(lambda store, a=after: store.page_after(query, a))  # type: ignore[misc]
            yield from page
            if len(page) < query.limit:
                return
            after = page[-1].id

    async def aiter_logs(self, query: LogQuery) -> AsyncIterator[AuditLogEntry]:
        await self._access.acatch_up()
        after = 0
        while True:
            page = await self._access.aask(lambda store, a=after: store.page_after(query, a))  # type: ignore[misc]
            for entry in page:
                yield entry
            if len(page) < query.limit:
                return
            after = page[-1].id

    def export(
        self,
        stream: IO[str],
        fmt: str,
        query: LogQuery,
        progress: Callable[[int], None] | None,
        decrypt: bool,
    ) -> int:
        """Plain rows (no models), ``query.limit`` a page, as JSON lines or CSV."""
        self._access.catch_up()
        writer = None
        if fmt == "csv":
            writer = csv.DictWriter(
                stream, fieldnames=list(AuditLogEntry.model_fields), lineterminator="\n"
            )
            writer.writeheader()
        opener = self._access.opener
        after = written = 0
        while True:
            page = self._access.ask(lambda store, a=after: store.rows_after(query, a))  # type: ignore[misc]
            if decrypt:
                page = [open_row(opener, row) for row in page]
            if writer is not None:
                for row in page:
                    row["parameters"] = orjson.dumps(row["parameters"]).decode()
                    row["labels"] = orjson.dumps(row["labels"]).decode() if row["labels"] else ""
                writer.writerows(page)
            else:
                stream.write("".join(orjson.dumps(row).decode() + "\n" for row in page))
            written += len(page)
            if progress is not None:
                progress(len(page))
            if len(page) < query.limit:
                return written
            after = page[-1]["id"]

    # ------------------------------------------------------------------ analytics

    def tool_stats(self, query: LogQuery) -> list[ToolStats]:
        return self._access.read(lambda store: store.tool_stats(query))

    async def atool_stats(self, query: LogQuery) -> list[ToolStats]:
        return await self._access.aread(lambda store: store.tool_stats(query))

    def slowest(self, query: LogQuery) -> list[AuditLogEntry]:
        return self._access.read(lambda store: store.slowest(query))

    async def aslowest(self, query: LogQuery) -> list[AuditLogEntry]:
        return await self._access.aread(lambda store: store.slowest(query))

    def error_groups(self, query: LogQuery) -> list[ErrorGroup]:
        return self._access.read(lambda store: store.error_groups(query))

    async def aerror_groups(self, query: LogQuery) -> list[ErrorGroup]:
        return await self._access.aread(lambda store: store.error_groups(query))

    def time_buckets(self, query: LogQuery, seconds: int) -> list[TimeBucket]:
        return self._access.read(lambda store: store.time_buckets(query, seconds))

    async def atime_buckets(self, query: LogQuery, seconds: int) -> list[TimeBucket]:
        return await self._access.aread(lambda store: store.time_buckets(query, seconds))

    # ------------------------------------------------------------------ verification

    def verify(self, anchors: str | os.PathLike[str] | None) -> VerifyReport:
        found = self._anchors(anchors)
        if isinstance(found, VerifyReport):
            return found
        opener = self._access.opener
        return self._access.read(lambda store: verify_sealed(store, self._verifier, found, opener))

    async def averify(self, anchors: str | os.PathLike[str] | None) -> VerifyReport:
        found = await asyncio.to_thread(self._anchors, anchors)
        if isinstance(found, VerifyReport):
            return found
        opener = self._access.opener
        return await self._access.aread(
            lambda store: verify_sealed(store, self._verifier, found, opener)
        )

    def _anchors(
        self, path: str | os.PathLike[str] | None
    ) -> tuple[list[Anchor], str] | VerifyReport:
        """The anchors in ``path``, or the failed report a garbled or forged file makes."""
        if path is None:
            return [], ""
        if self._access.central is not None:
            raise AuditConfigError(
                "an anchor file checks one SQLite trail: verify the replica's file "
                "(unset AUDIT_DB_URL); the central trail is checked against its own anchors"
            )
        try:
            return read_anchors(Path(path), self._verifier), str(path)
        except AnchorFileError as exc:
            return VerifyReport(
                ok=False, rows_checked=0, problem=str(exc), keyed=self._verifier.keyed
            )
