"""Reads the dashboard needs that the service's public calls do not offer: keyset pages by id.

The live tail asks "entries with an id above N", filtered or not, and one entry
by id. The stores answer that (``page_after``, the export path); the service
runs it on the store queries read (the central one with ``AUDIT_DB_URL``)
without flushing its own writer, so a poll every 250 ms never changes how the
writer batches. Everything else the page shows comes from the public calls.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .._encoding import decode_parameters
from .._query_args import with_caller
from ..models import AuditLogEntry
from ..service import AuditService
from ..storage._value_match import value_matches
from ..storage.base import LogQuery
from ._filters import Filters
from ._rows import opened

__all__ = [
    "entries_after",
    "entry_by_id",
    "filtered_query",
    "latest_id",
    "matches",
    "rows_after",
]


def filtered_query(service: AuditService, filters: Filters, limit: int) -> LogQuery:
    """The store query for ``filters``, validated by the service's own rules."""
    kwargs = filters.logs()
    query = service._query(
        kwargs["tool_name"],
        kwargs["status"],
        kwargs["since"],
        kwargs["until"],
        limit,
        0,
        kwargs["parameter_value"],
    )
    return with_caller(query, filters.user, filters.client, filters.session, None)


async def entries_after(
    service: AuditService, query: LogQuery, after_id: int
) -> list[AuditLogEntry]:
    """Up to ``query.limit`` entries matching ``query`` with ``id > after_id``, in id order."""
    return await service._aask(lambda store: store.page_after(query, after_id))


async def entry_by_id(service: AuditService, entry_id: int) -> AuditLogEntry | None:
    page = await entries_after(service, LogQuery(limit=1), entry_id - 1)
    return page[0] if page and page[0].id == entry_id else None


async def latest_id(service: AuditService) -> int:
    """An id every row at or below which is already committed (0 for an empty trail)."""
    newest = await service._aask(lambda store: store.query(LogQuery(limit=1)))
    return newest[0].id if newest else 0


async def rows_after(service: AuditService, query: LogQuery, after_id: int) -> list[dict[str, Any]]:
    """Like :func:`entries_after`, as JSON-ready dicts: no models on the streaming path.

    The store's ``rows_after`` is the raw export read; encrypted values are opened
    (or marked) here, as :func:`entries_after` and the live tail's rows show them.
    """
    rows = await service._aask(lambda store: store.rows_after(query, after_id))
    return [opened(service._opener, row) for row in rows]


def _when(value: str | datetime) -> datetime:
    if isinstance(value, datetime):  # a central store's timestamptz
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def matches(row: dict[str, Any], filters: Filters, pseudonym: str | None) -> bool:
    """Whether ``row`` (a :func:`rows_after` dict) passes ``filters``: the stores' WHERE
    clause applied to one row, so that ten streams share one query."""
    if filters.tool is not None and row["tool_name"] != filters.tool:
        return False
    if filters.status is not None and row["status"] != filters.status.value:
        return False
    if filters.since is not None and _when(row["timestamp"]) < filters.since:
        return False
    if filters.until is not None and _when(row["timestamp"]) > filters.until:
        return False
    for wanted, column in (
        (filters.user, "user"),
        (filters.client, "client_name"),
        (filters.session, "session_id"),
    ):
        if wanted is not None and row.get(column) != wanted:
            return False
    if filters.param is not None:
        needles = [filters.param] + ([pseudonym] if pseudonym else [])
        parameters = row["parameters"]
        if isinstance(parameters, str):  # a live tail row's stored text (``_rows``)
            parameters = decode_parameters(parameters)
        if not any(value_matches(parameters, needle) for needle in needles):
            return False
    return True
