"""The queries of :class:`~finops_audit.storage.postgres.PostgresAuditStore` as SQL.

Each builder mirrors its SQLite twin in ``sqlite.py`` or ``_sqlite_analytics.py``
and must give the same answers on the same trail (``tests/shared_store`` checks
it). Where the engines differ, the SQL here bends towards SQLite:

* Parameters are read from ``parameters_text`` (the exact JSON the replica
  wrote and the hash chain covers) and only fall back to the normalised
  ``jsonb`` text for unchained rows: ``jsonb`` reorders keys and prints
  ``1e20`` as ``100000000000000000000``, which would not read back the same.
* ``parameter_value`` matches values, never keys (``_value_match``): that same
  text prefilters with ``ILIKE`` under the ``"C"`` collation, then a walk of the
  ``jsonb`` confirms a value holds it. SQLite's ``LIKE`` ignores the case of
  ASCII letters only, and so does ``ILIKE`` under ``"C"``, whatever the locale.
* Percentiles are nearest-rank picks over ``ROW_NUMBER()`` with NULL times
  sorted first and counted, computed in double precision, because that is what
  SQLite's ``tool_stats_sql`` does; ``percentile_disc`` skips NULLs and would
  disagree whenever a tool has a call without a duration.
* The status filter is a literal from the enum so the partial index on
  failures can serve it; every other value is bound.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..models import AuditLogEntry, AuditStatus
from . import sqlite
from ._sqlite_analytics import GAP
from ._value_match import pg_value_match
from .base import CALLER_COLUMNS, LogQuery
from .sqlite import format_timestamp

__all__ = [
    "COLUMNS",
    "buckets_sql",
    "build_select",
    "build_where",
    "count_sql",
    "error_groups_sql",
    "page_sql",
    "row_to_dict",
    "row_to_entry",
    "slowest_sql",
    "tool_stats_sql",
]

_CALLERS = ", ".join('"user"' if c == "user" else c for c in CALLER_COLUMNS if c != "labels")

#: What an entry is read from, in :func:`row_to_entry` order.
COLUMNS = (
    "id, timestamp, tool_name, COALESCE(parameters_text, parameters::text), status, "
    f"error_message, execution_time_ms, {_CALLERS}, COALESCE(labels_text, labels::text), "
    "event_id, replica_id"
)

#: The parameters as the replica wrote them, searched by ``parameter_value``.
_PARAMS_TEXT = 'COALESCE(parameters_text, parameters::text) COLLATE "C"'


def _column(name: str) -> str:
    if name not in CALLER_COLUMNS:
        raise ValueError(f"{name!r} is not a caller column")
    return '"user"' if name == "user" else name


def build_where(query: LogQuery) -> tuple[str, list[Any]]:
    """WHERE clause for ``query``'s filters, as ``sqlite.build_where`` builds it."""
    where: list[str] = []
    params: list[Any] = []
    if query.tool_name is not None:
        where.append("tool_name = %s")
        params.append(query.tool_name)
    if query.status is not None:
        where.append(f"status = '{AuditStatus(query.status).value}'")
    if query.since is not None:
        where.append("timestamp >= %s")
        params.append(_aware(query.since))
    if query.until is not None:
        where.append("timestamp <= %s")
        params.append(_aware(query.until))
    for column, value in query.caller:
        where.append(f"{_column(column)} = %s")
        params.append(value)
    if query.parameter_value is not None:
        # values only, never keys, at any depth, as SQLite matches them (see _value_match)
        needles = [query.parameter_value]
        if query.pseudonym is not None:
            needles.append(query.pseudonym)
        matches = [pg_value_match(n, _PARAMS_TEXT) for n in needles]
        where.append("(" + " OR ".join(sql for sql, _ in matches) + ")")
        params.extend(p for _, ps in matches for p in ps)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def build_select(query: LogQuery) -> tuple[str, list[Any]]:
    """Newest first, with limit and offset (the ``get_logs`` page)."""
    where, params = build_where(query)
    sql = (
        f"SELECT {COLUMNS} FROM audit_logs{where} "
        "ORDER BY timestamp DESC, id DESC LIMIT %s OFFSET %s"
    )
    return sql, [*params, query.limit, query.offset]


def count_sql(query: LogQuery) -> tuple[str, list[Any]]:
    where, params = build_where(query)
    return f"SELECT count(*) FROM audit_logs{where}", params


def page_sql(query: LogQuery, after_id: int) -> tuple[str, list[Any]]:
    """Keyset page: ``id > after_id`` in id order (ids become visible in order)."""
    where, params = build_where(query)
    where = f"{where} AND id > %s" if where else " WHERE id > %s"
    sql = f"SELECT {COLUMNS} FROM audit_logs{where} ORDER BY id LIMIT %s"
    return sql, [*params, after_id, query.limit]


def _window(query: LogQuery, *, failures_only: bool = False) -> tuple[str, list[Any]]:
    """The analytics' filters: tool, since, until; gap markers are not calls."""
    where = ["tool_name <> %s"]
    params: list[Any] = [GAP]
    if query.tool_name is not None:
        where.append("tool_name = %s")
        params.append(query.tool_name)
    if failures_only:
        where.append("status = 'FAILURE'")
    if query.since is not None:
        where.append("timestamp >= %s")
        params.append(_aware(query.since))
    if query.until is not None:
        where.append("timestamp <= %s")
        params.append(_aware(query.until))
    return " WHERE " + " AND ".join(where), params


def _rank(p: float) -> str:
    # nearest rank ceil(p * n), at least 1, in double precision like SQLite's
    return f"greatest(1, ceil({p}::float8 * n))"


def tool_stats_sql(query: LogQuery) -> tuple[str, list[Any]]:
    where, params = _window(query)
    sql = f"""
        WITH ranked AS (
            SELECT tool_name, status, execution_time_ms AS ms,
                   row_number() OVER w AS rn,
                   count(*) OVER (PARTITION BY tool_name) AS n
            FROM audit_logs{where}
            WINDOW w AS (PARTITION BY tool_name ORDER BY execution_time_ms NULLS FIRST)
        )
        SELECT tool_name, n, count(*) FILTER (WHERE status = 'FAILURE'), avg(ms),
               max(ms) FILTER (WHERE rn = {_rank(0.50)}),
               max(ms) FILTER (WHERE rn = {_rank(0.95)}),
               max(ms) FILTER (WHERE rn = {_rank(0.99)}),
               max(ms)
        FROM ranked GROUP BY tool_name, n ORDER BY n DESC, tool_name
    """
    return sql, params


def slowest_sql(query: LogQuery) -> tuple[str, list[Any]]:
    where, params = _window(query)
    sql = (
        f"SELECT {COLUMNS} FROM audit_logs{where} "
        "AND execution_time_ms IS NOT NULL ORDER BY execution_time_ms DESC, id DESC LIMIT %s"
    )
    return sql, [*params, query.limit]


def error_groups_sql(query: LogQuery) -> tuple[str, list[Any]]:
    where, params = _window(query, failures_only=True)
    sql = (
        "SELECT tool_name, error_message, count(*), min(timestamp), max(timestamp) "
        f"FROM audit_logs{where} GROUP BY tool_name, error_message "
        "ORDER BY max(timestamp) DESC, tool_name, error_message LIMIT %s"
    )
    return sql, [*params, query.limit]


def buckets_sql(query: LogQuery, seconds: int) -> tuple[str, list[Any]]:
    where, params = _window(query)
    # whole seconds since the epoch, then integer division: SQLite's arithmetic
    sql = (
        "SELECT floor(extract(epoch FROM timestamp))::bigint / %s * %s AS bucket, "
        f"count(*), count(*) FILTER (WHERE status = 'FAILURE') FROM audit_logs{where} "
        "GROUP BY bucket ORDER BY bucket"
    )
    return sql, [seconds, seconds, *params]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _event_id(value: Any) -> str | None:
    if value is None:
        return None
    return value.hex if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).hex


def row_to_entry(row: Sequence[Any]) -> AuditLogEntry:
    """The public model of a central row (``COLUMNS`` order), built as SQLite builds it."""
    return sqlite.row_to_entry((*row[:16], _event_id(row[16])), replica_id=row[17])


def row_to_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A central row as ``sqlite.row_to_dict`` shapes a local one (plus ``replica_id``)."""
    out = sqlite.row_to_dict((row[0], format_timestamp(row[1]), *row[2:16], _event_id(row[16])))
    out["replica_id"] = row[17]
    return out
