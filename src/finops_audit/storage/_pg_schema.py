"""The central PostgreSQL schema: one trail for a fleet of replicas.

* ``audit_logs`` is range-partitioned by month on ``timestamp``; the forwarder
  creates each month's partition before it sends rows of that month (and the
  next month ahead), and retention drops whole partitions, which is cheap
  where ``DELETE`` plus ``VACUUM`` is not.
* The primary key ``(event_id, timestamp)`` makes forwarding idempotent: a
  batch sent twice inserts nothing the second time (``ON CONFLICT DO
  NOTHING``). It must include ``timestamp``, the partition key.
* ``id`` is a central sequence, given under a transaction-level advisory
  lock, so ids become visible in order: keyset paging (``id > last``) and
  ``tail`` never skip a row that commits late.
* ``replica_id`` and ``seq`` (the row's id in its replica's buffer) keep each
  replica's hash chain: ``parameters_text`` holds the exact JSON text the
  chain covers (``jsonb`` normalises it), only for chained rows.
* ``"user"`` is a reserved word in PostgreSQL: always quoted.
"""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = [
    "ADVISORY_LOCK_KEY",
    "CENTRAL_COLUMNS",
    "SCHEMA_STATEMENTS",
    "month_bounds",
    "partition_ddl",
    "partition_name",
]

#: pg_advisory_xact_lock key that serialises id assignment across forwarders.
ADVISORY_LOCK_KEY = 0x6A0D17  # "audit"

SCHEMA_STATEMENTS: tuple[str, ...] = (
    "CREATE SEQUENCE IF NOT EXISTS audit_logs_id_seq AS bigint",
    """
    CREATE TABLE IF NOT EXISTS audit_logs (
        id bigint NOT NULL DEFAULT nextval('audit_logs_id_seq'),
        event_id uuid NOT NULL,
        replica_id text NOT NULL,
        seq bigint NOT NULL,
        timestamp timestamptz NOT NULL,
        tool_name text NOT NULL,
        parameters jsonb NOT NULL,
        parameters_text text,
        status text NOT NULL,
        error_message text,
        execution_time_ms double precision,
        row_hash text,
        "user" text,
        client_name text,
        client_version text,
        session_id text,
        request_id text,
        auth_client_id text,
        trace_id text,
        span_id text,
        labels jsonb,
        forwarded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (event_id, timestamp)
    ) PARTITION BY RANGE (timestamp)
    """,
    "CREATE INDEX IF NOT EXISTS idx_audit_timestamp ON audit_logs (timestamp)",
    "CREATE INDEX IF NOT EXISTS idx_audit_tool_timestamp ON audit_logs (tool_name, timestamp)",
    "CREATE INDEX IF NOT EXISTS idx_audit_failure_timestamp ON audit_logs (timestamp) "
    "WHERE status = 'FAILURE'",
    "CREATE INDEX IF NOT EXISTS idx_audit_id ON audit_logs (id)",
    "CREATE INDEX IF NOT EXISTS idx_audit_replica_seq ON audit_logs (replica_id, seq)",
    # One row per replica (one buffer file): its chain's anchor and progress.
    """
    CREATE TABLE IF NOT EXISTS audit_replicas (
        replica_id text PRIMARY KEY,
        buffer_id text NOT NULL,
        anchor_seq bigint NOT NULL,
        anchor_hash text NOT NULL,
        legacy_through bigint NOT NULL DEFAULT 0,
        signature text NOT NULL,
        first_seen timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL DEFAULT now(),
        forwarded_seq bigint NOT NULL DEFAULT 0,
        forwarded_rows bigint NOT NULL DEFAULT 0
    )
    """,
    # Left by retention or purge: the chain hash at the last removed row of a
    # replica, so verify starts there instead of reporting a break.
    """
    CREATE TABLE IF NOT EXISTS audit_checkpoints (
        id bigserial PRIMARY KEY,
        replica_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        through_seq bigint NOT NULL,
        last_hash text NOT NULL,
        rows_purged bigint NOT NULL,
        signature text NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_audit_checkpoints_replica "
    "ON audit_checkpoints (replica_id, through_seq)",
)

#: Columns of ``audit_logs`` a forwarder fills, in COPY order.
CENTRAL_COLUMNS = (
    "event_id",
    "replica_id",
    "seq",
    "timestamp",
    "tool_name",
    "parameters",
    "parameters_text",
    "status",
    "error_message",
    "execution_time_ms",
    "row_hash",
    '"user"',
    "client_name",
    "client_version",
    "session_id",
    "request_id",
    "auth_client_id",
    "trace_id",
    "span_id",
    "labels",
)


def month_bounds(when: datetime) -> tuple[datetime, datetime]:
    """Start of ``when``'s month and of the next, in UTC."""
    when = when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def partition_name(start: datetime) -> str:
    return f"audit_logs_{start.year:04d}{start.month:02d}"


def partition_ddl(when: datetime) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the partition holding ``when``."""
    start, end = month_bounds(when)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(start)} PARTITION OF audit_logs "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )
