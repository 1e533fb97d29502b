"""The analytics of :mod:`finops_audit.analytics` as SQLite SQL.

SQLite 3.40 has no percentile function, so percentiles are nearest-rank picks
over ``ROW_NUMBER()`` within each tool's partition: one sort per query, done
by the database, with no rows crossing into Python but the answers.
"""

from __future__ import annotations

from typing import Any

from .base import LogQuery

__all__ = ["buckets_sql", "error_groups_sql", "slowest_sql", "tool_stats_sql", "window"]

GAP = "__audit_gap__"


def _rank(p: float) -> str:
    # nearest rank: ceil(p * n), at least 1 (no ceil() in SQLite without math functions)
    return f"max(1, CAST({p} * n AS INTEGER) + ({p} * n > CAST({p} * n AS INTEGER)))"


def window(query: LogQuery, *, failures_only: bool = False) -> tuple[str, list[Any]]:
    """WHERE clause and parameters for the tool/since/until filters (gap rows excluded)."""
    from .sqlite import format_timestamp

    where = ["tool_name != ?"]
    params: list[Any] = [GAP]
    if query.tool_name is not None:
        where.append("tool_name = ?")
        params.append(query.tool_name)
    if failures_only:
        where.append("status = 'FAILURE'")
    if query.since is not None:
        where.append("timestamp >= ?")
        params.append(format_timestamp(query.since))
    if query.until is not None:
        where.append("timestamp <= ?")
        params.append(format_timestamp(query.until))
    return " WHERE " + " AND ".join(where), params


def tool_stats_sql(query: LogQuery) -> tuple[str, list[Any]]:
    where, params = window(query)
    sql = f"""
        WITH ranked AS (
            SELECT tool_name, status, execution_time_ms AS ms,
                   ROW_NUMBER() OVER (PARTITION BY tool_name ORDER BY execution_time_ms) AS rn,
                   COUNT(*) OVER (PARTITION BY tool_name) AS n
            FROM audit_logs{where}
        )
        SELECT tool_name, n, SUM(status = 'FAILURE'), AVG(ms),
               MAX(CASE WHEN rn = {_rank(0.50)} THEN ms END),
               MAX(CASE WHEN rn = {_rank(0.95)} THEN ms END),
               MAX(CASE WHEN rn = {_rank(0.99)} THEN ms END),
               MAX(ms)
        FROM ranked GROUP BY tool_name ORDER BY n DESC, tool_name
    """
    return sql, params


def slowest_sql(query: LogQuery, columns: str) -> tuple[str, list[Any]]:
    where, params = window(query)
    sql = (
        f"SELECT {columns} FROM audit_logs{where} "
        "AND execution_time_ms IS NOT NULL ORDER BY execution_time_ms DESC, id DESC LIMIT ?"
    )
    return sql, [*params, query.limit]


def error_groups_sql(query: LogQuery) -> tuple[str, list[Any]]:
    where, params = window(query, failures_only=True)
    sql = (
        "SELECT tool_name, error_message, COUNT(*), MIN(timestamp), MAX(timestamp) "
        f"FROM audit_logs{where} GROUP BY tool_name, error_message "
        "ORDER BY MAX(timestamp) DESC LIMIT ?"
    )
    return sql, [*params, query.limit]


def buckets_sql(query: LogQuery, seconds: int) -> tuple[str, list[Any]]:
    where, params = window(query)
    sql = (
        "SELECT CAST(strftime('%s', substr(timestamp, 1, 19)) AS INTEGER) / ? * ? AS bucket, "
        f"COUNT(*), SUM(status = 'FAILURE') FROM audit_logs{where} "
        "GROUP BY bucket ORDER BY bucket"
    )
    return sql, [seconds, seconds, *params]
