"""Reads the dashboard needs that the service's public calls do not offer: keyset pages by id.

The live tail asks "entries with an id above N", filtered or not, and one entry
by id. The stores answer that (``page_after``, the export path); the service
runs it on the store queries read (the central one with ``AUDIT_DB_URL``)
without flushing its own writer, so a poll every 250 ms never changes how the
writer batches. Everything else the page shows comes from the public calls.
"""

from __future__ import annotations

from ..models import AuditLogEntry
from ..service import AuditService, _with_caller
from ..storage._value_match import value_matches
from ..storage.base import LogQuery
from ._filters import Filters

__all__ = ["entries_after", "entry_by_id", "filtered_query", "latest_id", "matches"]


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
    return _with_caller(query, filters.user, filters.client, filters.session, None)


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


def matches(entry: AuditLogEntry, filters: Filters, pseudonym: str | None) -> bool:
    """Whether ``entry`` passes ``filters``: the stores' WHERE clause, applied to one entry.

    Used on the rows the shared poller already holds, so ten streams cost one query.
    """
    if filters.tool is not None and entry.tool_name != filters.tool:
        return False
    if filters.status is not None and entry.status is not filters.status:
        return False
    if filters.since is not None and entry.timestamp < filters.since:
        return False
    if filters.until is not None and entry.timestamp > filters.until:
        return False
    for wanted, value in (
        (filters.user, entry.user),
        (filters.client, entry.client_name),
        (filters.session, entry.session_id),
    ):
        if wanted is not None and value != wanted:
            return False
    if filters.param is not None:
        needles = [filters.param] + ([pseudonym] if pseudonym else [])
        if not any(value_matches(entry.parameters, needle) for needle in needles):
            return False
    return True
