"""Least privilege on the central store: a writer, a reader and a maintainer role.

Why these rights and no more (PostgreSQL checks privileges on the partitioned
parent, so partitions need no grants of their own):

* **writer** (the forwarders): ``INSERT`` into ``audit_logs`` (``ON CONFLICT
  DO NOTHING`` needs nothing more, so sending a batch twice stays harmless)
  and the id sequence; registering a replica and moving its progress and
  anchor: ``INSERT`` plus column-level ``UPDATE``/``SELECT`` on
  ``audit_replicas`` and ``audit_anchors``, exactly the columns the upserts
  touch. No ``SELECT``, ``UPDATE`` or ``DELETE`` on ``audit_logs``: a
  compromised replica can add rows, never read, rewrite or remove the fleet's.
* **reader** (the CLI, the dashboard, analysts): ``SELECT`` on the four tables.
* **maintainer** (purge, retention, partitions): owns the tables, because
  ``DETACH``/``DROP`` of a partition and ``ATTACH`` of a new one are
  owner-only in PostgreSQL. Partitions are made ahead of time by this role
  (``finops-audit central init-roles`` makes ``months_ahead`` of them), since
  a writer cannot attach one.

The roles are ``NOLOGIN`` groups; each component logs in as its own user made
a member of one of them (``CREATE ROLE replica_7 LOGIN PASSWORD … IN ROLE
finops_audit_writer``). :func:`role_statements` is the SQL, also printed by
``init-roles --print-sql`` for review or a migration tool.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ._pg_schema import SCHEMA_LOCK_KEY, SCHEMA_STATEMENTS, partition_ddl

__all__ = ["ROLES", "init_roles", "role_names", "role_statements"]

#: The three roles, by job, as suffixes of the prefix.
ROLES = ("writer", "reader", "maintainer")
_TABLES = ("audit_logs", "audit_replicas", "audit_checkpoints", "audit_anchors")
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")


def role_names(prefix: str = "finops_audit") -> dict[str, str]:
    """``{"writer": "finops_audit_writer", ...}``; the prefix is a plain SQL identifier."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"role prefix {prefix!r} must be lower-case letters, digits and _")
    return {job: f"{prefix}_{job}" for job in ROLES}


def _create_role(name: str) -> str:
    return (
        f"DO $r$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') "
        f"THEN CREATE ROLE {name} NOLOGIN; END IF; END $r$"
    )


def role_statements(prefix: str = "finops_audit") -> list[str]:
    """Idempotent SQL granting each role its job on an existing schema (run as an admin)."""
    r = role_names(prefix)
    writer, reader, maintainer = r["writer"], r["reader"], r["maintainer"]
    tables = ", ".join(_TABLES)
    return [
        *(_create_role(name) for name in r.values()),
        f"REVOKE ALL ON {tables} FROM PUBLIC",
        "REVOKE ALL ON SEQUENCE audit_logs_id_seq FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {writer}, {reader}, {maintainer}",
        f"GRANT CREATE ON SCHEMA public TO {maintainer}",
        # the maintainer owns every table (and so its sequences) and every partition
        *(f"ALTER TABLE {t} OWNER TO {maintainer}" for t in _TABLES),
        f"ALTER SEQUENCE audit_logs_id_seq OWNER TO {maintainer}",
        "DO $p$ DECLARE part regclass; BEGIN FOR part IN SELECT inhrelid::regclass "
        "FROM pg_inherits WHERE inhparent = 'audit_logs'::regclass LOOP "
        f"EXECUTE format('ALTER TABLE %s OWNER TO {maintainer}', part); END LOOP; END $p$",
        # writer: add rows and move its replica's progress; nothing else
        f"GRANT INSERT ON audit_logs TO {writer}",
        f"GRANT USAGE ON SEQUENCE audit_logs_id_seq TO {writer}",
        f"GRANT INSERT ON audit_replicas, audit_anchors TO {writer}",
        # ON CONFLICT DO UPDATE reads the columns it sets: SELECT on exactly those
        f"GRANT SELECT (replica_id, buffer_id, anchor_seq, forwarded_seq, forwarded_rows, "
        f"last_seen) ON audit_replicas TO {writer}",
        f"GRANT UPDATE (forwarded_seq, forwarded_rows, last_seen) ON audit_replicas TO {writer}",
        f"GRANT SELECT (replica_id, last_seq, last_hash, created_at, signature) "
        f"ON audit_anchors TO {writer}",
        f"GRANT UPDATE (last_seq, last_hash, created_at, signature) ON audit_anchors TO {writer}",
        # reader: everything, read-only
        f"GRANT SELECT ON {tables} TO {reader}",
        f"GRANT SELECT ON {tables} TO {maintainer}",
    ]


def _month(year: int, month: int) -> datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=timezone.utc)


def init_roles(
    url: str, *, prefix: str = "finops_audit", months_ahead: int = 12, create_roles: bool = True
) -> dict[str, str]:
    """Create the schema if missing, ``months_ahead`` monthly partitions from last month,
    and (``create_roles``) the roles and their rights. Idempotent; returns the role names.

    Run it as a superuser (or an admin able to create roles and own the tables);
    later runs as the maintainer with ``create_roles=False`` add partitions.
    """
    import psycopg

    names = role_names(prefix)
    now = datetime.now(timezone.utc)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
            for statement in SCHEMA_STATEMENTS:
                conn.execute(statement)
        if create_roles:
            with conn.transaction():
                for statement in role_statements(prefix):
                    conn.execute(statement)
        # Partitions belong to the maintainer role itself, never to one login
        # in it: any maintainer can detach and drop them later.
        maintainer = names["maintainer"]
        row = conn.execute(
            "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s",
            (maintainer,),
        ).fetchone()
        if row is not None and row[0]:
            conn.execute(f"SET ROLE {maintainer}")
        for offset in range(-1, months_ahead + 1):
            conn.execute(partition_ddl(_month(now.year, now.month + offset)))
        conn.execute("RESET ROLE")
    return names
