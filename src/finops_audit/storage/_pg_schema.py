"""The central PostgreSQL schema: one trail for a fleet of replicas.

* ``audit_logs`` is range-partitioned by month on ``timestamp``; the forwarder
  creates each month's partition before it sends rows of that month (and the
  next month ahead), and retention drops whole partitions, which is cheap
  where ``DELETE`` plus ``VACUUM`` is not. :func:`partition_ddl` is the one
  way a partition is made: ``CREATE TABLE … (LIKE audit_logs)`` plus ``ATTACH
  PARTITION``, which takes SHARE UPDATE EXCLUSIVE on ``audit_logs`` (readers
  and inserters go on), where ``CREATE TABLE … PARTITION OF`` takes ACCESS
  EXCLUSIVE: it would wait behind a long export and stall every reader queued
  behind it.
* The primary key ``(event_id, timestamp)`` makes forwarding idempotent: a
  batch sent twice inserts nothing the second time (``ON CONFLICT DO
  NOTHING``). It must include ``timestamp``, the partition key.
* ``id`` is a central sequence, given under a transaction-level advisory
  lock, so ids become visible in order: keyset paging (``id > last``) and
  ``tail`` never skip a row that commits late.
* ``replica_id`` and ``seq`` (the row's id in its replica's buffer) keep each
  replica's hash chain: ``parameters_text`` and ``labels_text`` hold the exact
  JSON texts the chain covers (``jsonb`` normalises them: it reorders keys and
  respells numbers), only for chained rows.
* ``"user"`` is a reserved word in PostgreSQL: always quoted.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .base import CALLER_COLUMNS

__all__ = [
    "ADVISORY_LOCK_KEY",
    "CENTRAL_COLUMNS",
    "PARTITION_LOCK_KEY",
    "PG_CALLER_COLUMNS",
    "SCHEMA_LOCK_KEY",
    "SCHEMA_STATEMENTS",
    "partition_ddl",
    "partition_name",
]

#: pg_advisory_xact_lock key that serialises id assignment across forwarders.
ADVISORY_LOCK_KEY = 0x6A0D17  # "audit"
#: pg_advisory_xact_lock key under which the schema is created (sessions take turns).
SCHEMA_LOCK_KEY = ADVISORY_LOCK_KEY + 1
#: pg_advisory_xact_lock key under which partitions are created.
PARTITION_LOCK_KEY = ADVISORY_LOCK_KEY + 2

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
        labels_text text,
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
    # The newest row each replica's forwarder delivered, signed with the anchor
    # subkey in the transaction that delivered it: verify notices the newest
    # rows of a replica deleted centrally (the chain alone cannot).
    """
    CREATE TABLE IF NOT EXISTS audit_anchors (
        replica_id text PRIMARY KEY,
        last_seq bigint NOT NULL,
        last_hash text NOT NULL,
        created_at text NOT NULL,
        signature text NOT NULL
    )
    """,
)

#: Columns of ``audit_logs`` a forwarder fills, in COPY order.
#: The caller columns as PostgreSQL spells them (``"user"`` is reserved), labels aside.
PG_CALLER_COLUMNS = tuple(f'"{c}"' if c == "user" else c for c in CALLER_COLUMNS if c != "labels")

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
    *PG_CALLER_COLUMNS,
    "labels",
    "labels_text",
)


def partition_name(when: datetime) -> str:
    """Name of the monthly partition for ``when``'s year and month (as given, not converted)."""
    return f"audit_logs_{when.year:04d}{when.month:02d}"


def _month_start(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}-01 00:00:00+00"  # as text: December 9999 has an end too


def partition_ddl(when: datetime) -> str:
    """One statement that makes the partition holding ``when`` unless it exists.

    The check and the creation run under :data:`PARTITION_LOCK_KEY`, held to
    the end of the transaction (the statement's own in autocommit), so
    sessions making the same month take turns. A table that has the
    partition's name but is not one is an error, never silently used.
    """
    when = when.astimezone(timezone.utc) if when.tzinfo else when  # naive: UTC already
    name = partition_name(when)
    low = _month_start(when.year, when.month)
    high = (
        _month_start(when.year + 1, 1)
        if when.month == 12
        else _month_start(when.year, when.month + 1)
    )
    refused = (
        f"table {name} exists but is not a partition of audit_logs; "
        "drop or rename it so its month can be forwarded"
    )
    return f"""DO $partition$
BEGIN
    PERFORM pg_advisory_xact_lock({PARTITION_LOCK_KEY});
    IF to_regclass('{name}') IS NULL THEN
        CREATE TABLE {name} (LIKE audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
        ALTER TABLE audit_logs ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}');
    ELSIF NOT (SELECT relispartition FROM pg_class WHERE oid = to_regclass('{name}')) THEN
        RAISE EXCEPTION '{refused}';
    END IF;
END
$partition$"""
