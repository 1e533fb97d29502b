"""PostgresSink: a replica's committed rows into the central PostgreSQL trail.

One ``send`` is one transaction, so a batch lands whole or not at all::

    binary COPY ──► temporary staging table       (outside the lock: the slow part)
    pg_advisory_xact_lock(ADVISORY_LOCK_KEY)      (ids are given, and become visible, in order)
    INSERT INTO audit_logs SELECT … ORDER BY seq ON CONFLICT DO NOTHING
    upsert audit_replicas (anchor on first sight, progress) ; COMMIT

``ON CONFLICT DO NOTHING`` on the key ``(event_id, timestamp)`` makes a batch
sent again (after a crash or a timeout) insert nothing, and a half-overlapping
one insert only its new rows. ``benchmarks/bench_forward_copy.py`` (5,000-row
batches, medians of 5 runs on a 2-core machine, PostgreSQL 15): 0.70 of raw
COPY into the same table (34,000 against 46,000 rows/s); text COPY into a typed
staging table 0.57, a staging table per transaction 0.66, ``executemany`` with
``ON CONFLICT`` 0.50, ``INSERT … SELECT FROM unnest(arrays)`` 0.18; a batch
sent again (all duplicates) 0.94. Converting rows costs ~3.5 µs each of that.

Partitions are made before that transaction, in a short one of their own,
as ``CREATE TABLE … (LIKE audit_logs)`` plus ``ATTACH PARTITION``: attaching
takes SHARE UPDATE EXCLUSIVE on ``audit_logs``, which readers and inserters
do not conflict with, where ``CREATE TABLE … PARTITION OF`` takes ACCESS
EXCLUSIVE: it would wait behind a long export, stall every reader queued
behind it, and could deadlock against a forwarder that holds the id lock. An
empty partition left by a failed batch is harmless (months are made ahead).

Data PostgreSQL refuses must not jam a replica's forwarding, and the chain
must stay checkable centrally. The hash chain covers, per row, the timestamp
text, tool name, parameters text, status, error, duration, the caller columns
and the labels text (:data:`CHAIN_COLUMNS`), so those are stored verbatim
where PostgreSQL can hold them and reversibly escaped where it cannot:

* A text value holding NUL (``text`` refuses it) or a lone surrogate (not
  UTF-8), or starting with the marker U+FDD0, is stored as U+FDD0 followed by
  its JSON string literal in ASCII. :func:`restore_text` inverts it exactly,
  and :func:`chain_fields` gives a verifier the row as the chain covers it.
  Only hand-edited or pre-chain rows hold such values; readers see them
  escaped.
* ``parameters`` (``jsonb``) is the queryable form: JSON that ``jsonb`` cannot
  hold (``\\u0000``, lone surrogate escapes, NaN, invalid text, nesting beyond
  1,024) is cleaned (U+FFFD) or kept as ``{"$unparsed": text}``; the exact
  text is in ``parameters_text`` (chained rows only). ``labels`` likewise, with
  the exact text in ``labels_text``, a column this module adds (compatible:
  ``ADD COLUMN IF NOT EXISTS``, nullable) because ``jsonb`` loses key order.
* An event id that is not 32 hex digits gets a UUID derived from the replica
  and seq (stable, so a re-send still deduplicates); an unparseable timestamp
  is stored as the epoch. Both make that row fail central verification.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
import psycopg

from .._chain import Chainer
from ..exceptions import AuditStorageError
from ..storage._pg_schema import ADVISORY_LOCK_KEY, CENTRAL_COLUMNS, SCHEMA_STATEMENTS
from ..storage.sqlite import format_timestamp
from .base import BufferedRow, ReplicaInfo

__all__ = [
    "CHAIN_COLUMNS",
    "PARTITION_LOCK_KEY",
    "SCHEMA_LOCK_KEY",
    "STORED_COLUMNS",
    "PostgresSink",
    "central_rows",
    "chain_fields",
    "jsonb_input",
    "mask_url",
    "replica_signature",
    "restore_text",
]

logger = logging.getLogger("finops_audit")

#: Advisory lock keys (transaction level) for creating the schema and partitions.
SCHEMA_LOCK_KEY = ADVISORY_LOCK_KEY + 1
PARTITION_LOCK_KEY = ADVISORY_LOCK_KEY + 2

#: Columns a forwarder fills, in :func:`central_rows` order: the schema's
#: ``CENTRAL_COLUMNS`` plus ``labels_text``, the exact labels text the chain covers.
STORED_COLUMNS = (*CENTRAL_COLUMNS, "labels_text")

#: What the hash chain covers, as central columns, in chain order (see :func:`chain_fields`).
CHAIN_COLUMNS = (
    "timestamp",
    "tool_name",
    "parameters_text",
    "status",
    "error_message",
    "execution_time_ms",
    '"user"',
    "client_name",
    "client_version",
    "session_id",
    "request_id",
    "auth_client_id",
    "trace_id",
    "span_id",
    "labels_text",
)

_MARK = "\ufdd0"  # a Unicode noncharacter: valid UTF-8, never in real text
_SURROGATE = re.compile("[\ud800-\udfff]")
_EVENT_ID = re.compile("[0-9a-fA-F]{32}")
_EPOCH = "1970-01-01T00:00:00.000000+00:00"
_EVENT_NAMESPACE = uuid.UUID("6a0d1700-0000-4000-8000-66696e6f7073")

_LABELS_DDL = "ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS labels_text text"
_SCHEMA_OBJECTS = tuple(
    match.group(1)
    for statement in SCHEMA_STATEMENTS
    if (match := re.search(r"IF NOT EXISTS\s+(\w+)", statement))
)
_SCHEMA_MISSING = """
SELECT (SELECT count(*) FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NULL)
     + (SELECT count(*) FROM (SELECT 1) AS one WHERE NOT EXISTS (
            SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('audit_logs')
            AND attname = 'labels_text' AND NOT attisdropped))
"""
# Staging is all text but seq and duration: binary COPY of Python strings is then
# a plain copy of bytes (measured ~2x cheaper than text COPY into typed columns),
# and uuid, timestamptz and jsonb are parsed once, by the INSERT's casts.
_CAST = {"event_id": "uuid", "timestamp": "timestamptz", "parameters": "jsonb", "labels": "jsonb"}
_STAGING_TYPES = tuple(
    {"seq": "int8", "execution_time_ms": "float8"}.get(c, "text") for c in STORED_COLUMNS
)
_COLUMN_LIST = ", ".join(STORED_COLUMNS)
_STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS finops_audit_staging ("
    + ", ".join(f"{c} {t}" for c, t in zip(STORED_COLUMNS, _STAGING_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS"
)
_COPY = f"COPY finops_audit_staging ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
_INSERT = (
    f"INSERT INTO audit_logs ({_COLUMN_LIST}) SELECT "
    + ", ".join(f"{c}::{_CAST[c]}" if c in _CAST else c for c in STORED_COLUMNS)
    + " FROM finops_audit_staging ORDER BY seq ON CONFLICT DO NOTHING"
)
_REPLICA_UPSERT = """
INSERT INTO audit_replicas AS r (replica_id, buffer_id, anchor_seq, anchor_hash,
                                 legacy_through, signature, forwarded_seq, forwarded_rows)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (replica_id) DO UPDATE SET
    forwarded_seq = greatest(r.forwarded_seq, EXCLUDED.forwarded_seq),
    forwarded_rows = r.forwarded_rows + EXCLUDED.forwarded_rows,
    last_seen = now()
WHERE r.buffer_id = EXCLUDED.buffer_id
RETURNING r.anchor_seq
"""


# ----------------------------------------------------------------- secrets in messages
def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (URL or ``key=value`` form)."""
    if "://" not in url:
        masked = re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    else:
        parts = urlsplit(url)
        netloc = parts.netloc
        userinfo, at, hosts = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
        query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
        masked = urlunsplit(parts._replace(netloc=netloc, query=query))
    for secret in _secrets(url):  # wherever else it was written
        masked = masked.replace(secret, "***")
    return masked


def _secrets(url: str) -> list[str]:
    """Every spelling of the password in ``url``, longest first."""
    found: list[str] = []
    if "://" in url:
        userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        found += re.findall(r"(?i)(?:^|&)password=([^&]*)", urlsplit(url).query)
    else:
        found += [m.strip("'") for m in re.findall(r"(?i)password\s*=\s*('[^']*'|\S+)", url)]
    spelled = {s for f in found for s in (f, unquote(f)) if s}
    return sorted(spelled, key=len, reverse=True)


# ----------------------------------------------------------------- chain-exact text
def _escape(value: str) -> str:
    return _MARK + json.dumps(value)  # ASCII: NUL and surrogates become \\uXXXX


def _text(value: Any) -> str | None:
    """A text column's stored form: itself, unless PostgreSQL cannot hold it."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)  # SQLite's loose typing
    if "\x00" in text or text.startswith(_MARK):
        return _escape(text)
    if not text.isascii() and _SURROGATE.search(text) is not None:
        return _escape(text)
    return text


def restore_text(value: str | None) -> str | None:
    """The exact text a replica had, from a stored text column (inverse of the escaping)."""
    if value is None or not value.startswith(_MARK):
        return value
    restored = json.loads(value[1:])
    return restored if isinstance(restored, str) else value


def chain_fields(values: Sequence[Any]) -> tuple[Any, ...]:
    """The row as the hash chain covers it, from central values in :data:`CHAIN_COLUMNS` order.

    A verifier computes ``chainer.row_hash(seq, chain_fields(values), prev_hash)``.
    """
    ts, *rest = values
    stamp = format_timestamp(ts) if isinstance(ts, datetime) else ts
    out: list[Any] = [stamp]
    for index, value in enumerate(rest):
        out.append(value if index == 4 else restore_text(value))  # 4: execution_time_ms
    return tuple(out)


def replica_signature(
    chainer: Chainer,
    replica_id: str,
    buffer_id: str,
    anchor_seq: int,
    anchor_hash: str,
    legacy_through: int,
) -> str:
    """Signature of a replica's registration, over the values as stored.

    Canonical form: ``chainer.meta_signature("replica", J)`` where ``J`` is the
    compact JSON (orjson) of ``[replica_id, buffer_id, anchor_seq, anchor_hash,
    legacy_through]``; with ``AUDIT_HMAC_KEY`` nobody without the key can move
    a replica's anchor unnoticed.
    """
    canonical = orjson.dumps([replica_id, buffer_id, anchor_seq, anchor_hash, legacy_through])
    return chainer.meta_signature("replica", canonical.decode("utf-8"))


# ----------------------------------------------------------------- jsonb
def _clean(value: Any) -> Any:
    """``value`` with every string jsonb could not hold made safe (NUL, surrogates)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _finite(text: str) -> float | str:
    number = float(text)
    return number if math.isfinite(number) else text  # 1e400: kept as its text


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _jsonb_slow(text: str, *, want_object: bool) -> str:
    """jsonb input for text that is not plain JSON jsonb accepts: cleaned, or wrapped.

    Raw control characters inside strings are accepted here (``strict=False``)
    and re-escaped on output, so only text that is not JSON at all is wrapped.
    """
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_reject_constant, strict=False)
        if want_object and not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return json.dumps(_clean(value), ensure_ascii=False)
    except (ValueError, RecursionError):
        return json.dumps({"$unparsed": _clean(text)}, ensure_ascii=False)


def jsonb_input(raw: Any, *, want_object: bool = False) -> str:
    """What the sink stores in a ``jsonb`` column for a JSON text: the text itself
    whenever ``jsonb`` takes it, else a cleaned or ``{"$unparsed": text}`` form."""
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    try:
        value = orjson.loads(text)  # stricter than jsonb, except for \u0000
    except orjson.JSONDecodeError:
        return _jsonb_slow(text, want_object=want_object)
    if "\\u0000" in text or (want_object and not isinstance(value, dict)):
        return _jsonb_slow(text, want_object=want_object)
    return text


# ----------------------------------------------------------------- rows
def _timestamp(text: Any) -> tuple[str, int]:
    """(stored timestamp text, month key year*12+month-1) for a buffer timestamp."""
    try:
        if text.endswith("+00:00"):  # the buffer's own format: stored as it is
            when = datetime.fromisoformat(text)
            return text, when.year * 12 + when.month - 1
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
        when = when.astimezone(timezone.utc)
        return format_timestamp(when), when.year * 12 + when.month - 1
    except (AttributeError, TypeError, ValueError, OverflowError):
        return _EPOCH, 1970 * 12


def _event_id(event_id: Any, replica_id: str, seq: int) -> str:
    if isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id):
        return event_id
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{replica_id}\x1f{seq}\x1f{event_id}"))


_jsonb = jsonb_input  # the name storage/_pg_maintenance.py still uses


def _row_texts(row: Sequence[Any]) -> tuple[Any, ...]:
    """Text columns the chain covers, as stored: (tool, params, status, error, hash, *callers,
    labels). One probe over the whole row; each value is looked at only if it finds something.
    """
    texts = (*row[3:7], *row[8:18])
    try:
        probe = "".join(filter(None, texts))  # TypeError: a BLOB in a text column
    except TypeError:
        return tuple(_text(v) for v in texts)
    if "\x00" in probe or _MARK in probe:
        return tuple(_text(v) for v in texts)
    if not probe.isascii() and _SURROGATE.search(probe) is not None:
        return tuple(_text(v) for v in texts)
    return texts


def central_rows(
    replica_id: str, rows: Iterable[Sequence[Any]]
) -> tuple[list[tuple[Any, ...]], set[int]]:
    """Buffer rows as ``STORED_COLUMNS`` values (all text but seq and duration: the
    staging table's types), and the months they fall in."""
    out: list[tuple[Any, ...]] = []
    months: set[int] = set()
    jsonb = jsonb_input
    for row in rows:
        seq, event_id, ts, _, params, _, _, elapsed, row_hash = row[:9]
        texts = _row_texts(row)
        stamp, month = _timestamp(ts)
        months.add(month)
        if elapsed.__class__ is not float and elapsed is not None:
            try:
                elapsed = float(elapsed)
            except (TypeError, ValueError):
                elapsed = None
        labels = row[17]
        out.append(
            (
                _event_id(event_id, replica_id, seq),
                replica_id,
                int(seq),
                stamp,
                texts[0],
                jsonb(params),
                texts[1] if row_hash is not None else None,
                texts[2],
                texts[3],
                elapsed,
                *texts[4:13],  # row_hash, user .. span_id
                None if labels is None else jsonb(labels, want_object=True),
                texts[13] if row_hash is not None else None,
            )
        )
    return out, months


def _partition(month: int) -> tuple[str, str, str]:
    """(name, FROM, TO) of the monthly partition ``month`` (year*12 + month-1)."""

    def start(key: int) -> str:
        year, index = divmod(key, 12)
        return f"{year:04d}-{index + 1:02d}-01 00:00:00+00"

    year, index = divmod(month, 12)
    return f"audit_logs_{year:04d}{index + 1:02d}", start(month), start(month + 1)


# ----------------------------------------------------------------- the sink
class PostgresSink:
    """:class:`~finops_audit.forwarding.ForwardSink` into the central PostgreSQL store.

    Synchronous (it runs in the forwarder's thread) over one psycopg
    connection, opened on the first ``send`` and after any failure: every
    error closes it, so the next attempt starts from a fresh session.
    """

    name = "postgres"

    def __init__(self, url: str, chainer: Chainer, *, connect_timeout: float = 5.0) -> None:
        self._url = url
        self._chainer = chainer
        self._connect_timeout = connect_timeout
        self._target = mask_url(url)
        self._secrets = _secrets(url)
        self._conn: psycopg.Connection[Any] | None = None
        self._partitions: set[int] = set()  # months known to exist, this connection
        self._replicas: set[tuple[str, str]] = set()  # (replica, buffer) checked, idem

    def describe(self) -> str:
        return self._target

    def __repr__(self) -> str:
        return f"PostgresSink({self._target!r})"

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the PostgreSQL forwarding connection", exc_info=True)

    def send(self, replica: ReplicaInfo, rows: Sequence[BufferedRow], prev_hash: str) -> None:
        if not rows:
            return
        replica_id = _text(replica.replica_id) or ""
        values, months = central_rows(replica_id, rows)
        months.add(max(months) + 1)  # the month after the newest row: made ahead
        try:
            conn = self._connection()
            self._ensure_partitions(conn, months)
            self._check_replica(conn, replica_id, replica.buffer_id)
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(_COPY) as copy:
                    copy.set_types(_STAGING_TYPES)
                    for value in values:
                        copy.write_row(value)
                cur.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
                cur.execute(_INSERT)
                inserted = max(cur.rowcount, 0)
                anchor = rows[0][0] - 1
                cur.execute(
                    _REPLICA_UPSERT,
                    (
                        replica_id,
                        replica.buffer_id,
                        anchor,
                        prev_hash,
                        replica.legacy_through,
                        replica_signature(
                            self._chainer,
                            replica_id,
                            replica.buffer_id,
                            anchor,
                            prev_hash,
                            replica.legacy_through,
                        ),
                        rows[-1][0],
                        inserted,
                    ),
                )
                if cur.fetchone() is None:  # registered meanwhile by another buffer
                    raise self._conflict(replica_id)
        except (psycopg.Error, OSError) as exc:
            self.close()
            if isinstance(exc, AuditStorageError):  # ours (an OSError): already explained
                raise
            raise self._error(f"cannot forward {len(rows)} rows to", exc) from None
        except BaseException:
            self.close()  # whatever it was, the next attempt starts from a fresh session
            raise

    # -- connection and schema
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._partitions.clear()
        self._replicas.clear()
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(1, math.ceil(self._connect_timeout)),
                application_name="finops-audit forwarder",
                # A server that vanishes mid-send (network gone, not refused)
                # fails the send in ~30 s instead of the kernel's ~15 minutes.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                tcp_user_timeout=30_000,
            )
        except psycopg.Error as exc:
            raise self._error("cannot connect to", exc) from None
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Create the schema unless it is complete; replicas starting together take turns.

        ``CREATE … IF NOT EXISTS`` alone races in PostgreSQL (two sessions both
        see nothing and one fails on a catalog key), hence the advisory lock;
        the probe first keeps a complete schema free of DDL locks.
        """
        if _missing(conn):
            with conn.transaction():
                conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
                for statement in SCHEMA_STATEMENTS:
                    conn.execute(statement)
                if _missing(conn):
                    conn.execute(_LABELS_DDL)
        conn.execute(_STAGING_DDL)

    def _ensure_partitions(self, conn: psycopg.Connection[Any], months: set[int]) -> None:
        wanted = sorted(m for m in months - self._partitions if m < 10000 * 12)
        if not wanted:
            return
        names = {_partition(m)[0]: m for m in wanted}
        missing = _absent(conn, names)
        if missing:
            with conn.transaction():
                conn.execute(f"SELECT pg_advisory_xact_lock({PARTITION_LOCK_KEY})")
                for name in _absent(conn, {n: names[n] for n in missing}):
                    _, low, high = _partition(names[name])
                    conn.execute(
                        f"CREATE TABLE {name} "
                        "(LIKE audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                    )
                    conn.execute(
                        f"ALTER TABLE audit_logs ATTACH PARTITION {name} "
                        f"FOR VALUES FROM ('{low}') TO ('{high}')"
                    )
        self._partitions.update(wanted)

    def _check_replica(
        self, conn: psycopg.Connection[Any], replica_id: str, buffer_id: str
    ) -> None:
        """Refuse early a replica id that another buffer registered (the upsert re-checks)."""
        if (replica_id, buffer_id) in self._replicas:
            return
        row = conn.execute(
            "SELECT buffer_id FROM audit_replicas WHERE replica_id = %s", (replica_id,)
        ).fetchone()
        if row is not None and row[0] != buffer_id:
            raise self._conflict(replica_id)
        self._replicas.add((replica_id, buffer_id))

    # -- messages
    def _conflict(self, replica_id: str) -> AuditStorageError:
        return AuditStorageError(
            f"replica id {replica_id} is already used by another buffer; "
            "give this replica its own AUDIT_REPLICA_ID"
        )

    def _error(self, doing: str, exc: BaseException) -> AuditStorageError:
        text = str(exc).strip().replace(self._url, self._target)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if len(text) > 1000:  # it ends up in stats() and logs
            text = text[:1000] + " …"
        return AuditStorageError(f"{doing} PostgreSQL at {self._target}: {text}")


def _missing(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_SCHEMA_MISSING, (list(_SCHEMA_OBJECTS),)).fetchone()
    return int(row[0]) if row else 0


def _absent(conn: psycopg.Connection[Any], names: dict[str, int]) -> list[str]:
    """Which of ``names`` are not yet partitions; a same-named plain table is an error."""
    found = conn.execute(
        "SELECT c.relname, c.relispartition FROM pg_class c "
        "WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p') "
        "AND pg_table_is_visible(c.oid)",
        (list(names),),
    ).fetchall()
    for relname, is_partition in found:
        if not is_partition:
            raise AuditStorageError(
                f"table {relname} exists but is not a partition of audit_logs; "
                "drop or rename it so its month can be forwarded"
            )
    present = {relname for relname, _ in found}
    return [name for name in names if name not in present]
