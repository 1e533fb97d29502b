"""Forwarding throughput into PostgreSQL against raw COPY: a plain script, not pytest.

Starts its own throw-away PostgreSQL (``temporary_postgres()``), builds a
chained replica trail in memory and, per run, times each way of writing it in
5,000-row transactions into a fresh database with the central schema and its
partitions already made::

    python benchmarks/bench_forward_copy.py [--rows 50000] [--batch 5000] [--runs 5]

* ``raw COPY`` (the baseline): ``COPY audit_logs FROM STDIN`` of the rows
  already converted, one commit per batch: no deduplication, no id lock, no
  conversion; the least PostgreSQL can be asked to do for these rows.
* ``PostgresSink.send``: the real thing, conversion and all (staging COPY,
  advisory lock, ``INSERT … SELECT … ON CONFLICT DO NOTHING``, replica upsert).
* Alternatives for the write step, each with the same conversion, lock and
  upsert: text COPY into a typed staging table (the sink uses binary COPY into
  an all-text one and casts in the INSERT), staging created per transaction
  (``ON COMMIT DROP``) instead of once per connection, ``INSERT … SELECT FROM
  unnest(arrays) ON CONFLICT``, and ``executemany`` of ``INSERT … ON CONFLICT``.
* ``resend``: ``PostgresSink.send`` of batches already stored (all duplicates).

Runs are interleaved (each run does every variant once), figures are medians
of rows/s, and the last column is the ratio to raw COPY in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg

from finops_audit._chain import GENESIS, Chainer
from finops_audit._pgserver import temporary_postgres
from finops_audit.forwarding import postgres as pg
from finops_audit.forwarding._pg_rows import central_rows
from finops_audit.forwarding.base import BufferedRow, ReplicaInfo
from finops_audit.storage._pg_schema import (
    ADVISORY_LOCK_KEY,
    CENTRAL_COLUMNS,
    SCHEMA_STATEMENTS,
    partition_ddl,
)
from finops_audit.storage.sqlite import format_timestamp

Writer = Callable[[psycopg.Connection[Any], list[BufferedRow]], None]
REPLICA = ReplicaInfo(replica_id="bench-replica", buffer_id="b" * 32, legacy_through=0)
CHAINER = Chainer()


def make_rows(count: int) -> list[BufferedRow]:
    """A chained trail like a busy MCP server's: ~150-byte parameters, a third with callers."""
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    bodies = []
    for i in range(count):
        params = {
            "account_id": f"{100000000000 + i % 977}",
            "region": ["us-east-1", "eu-west-1", "ap-south-1"][i % 3],
            "service": "ec2",
            "granularity": "DAILY",
            "filters": {"tags": {"team": f"team-{i % 17}"}, "limit": i % 100},
        }
        caller: tuple[Any, ...] = (None,) * 9
        if i % 3 == 0:
            caller = (
                f"user{i % 50}",
                "claude-desktop",
                "1.4.2",
                uuid.UUID(int=i % 997).hex,
                str(i),
                None,
                None,
                None,
                orjson.dumps({"team": f"team-{i % 17}", "tenant": "acme"}).decode(),
            )
        bodies.append(
            (
                format_timestamp(start + timedelta(microseconds=i * 1000)),
                ["get_cost_and_usage", "describe_instances", "list_buckets"][i % 3],
                orjson.dumps(params).decode(),
                "FAILURE" if i % 50 == 0 else "SUCCESS",
                "ThrottlingException: Rate exceeded" if i % 50 == 0 else None,
                1.5 + (i % 400) / 7,
                *caller,
            )
        )
    linked, _ = CHAINER.link(1, GENESIS, bodies)
    return [BufferedRow(r[0], uuid.uuid4().hex, *r[1:7], r[16], *r[7:16]) for r in linked]


def fresh_db(admin: str, name: str, months: set[int]) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SCHEMA_STATEMENTS:
            conn.execute(statement)
        for month in months:
            year, index = divmod(month, 12)
            conn.execute(partition_ddl(datetime(year, index + 1, 1, tzinfo=timezone.utc)))
        conn.execute("CHECKPOINT")
    return url


def _finish(cur: psycopg.Cursor[Any], rows: list[BufferedRow], inserted: int) -> None:
    anchor = rows[0].seq - 1
    signature = pg.replica_signature(
        CHAINER, REPLICA.replica_id, REPLICA.buffer_id, anchor, GENESIS, 0
    )
    cur.execute(
        pg._REPLICA_UPSERT,
        (
            REPLICA.replica_id,
            REPLICA.buffer_id,
            anchor,
            GENESIS,
            0,
            signature,
            rows[-1].seq,
            inserted,
        ),
    )


def staged(binary: bool, per_transaction: bool) -> Writer:
    """The sink's write step with one choice changed: COPY format, staging table lifetime.

    ``binary=False`` is text COPY into a typed staging table (uuid, timestamptz,
    jsonb parsed by COPY); ``binary=True`` is the sink's all-text table, with
    casts in the INSERT. ``per_transaction=True`` creates the table in every
    transaction (``ON COMMIT DROP``) instead of once per connection.
    """
    types = [
        t if binary else pg._CAST.get(c.strip('"'), t)
        for c, t in zip(CENTRAL_COLUMNS, pg._STAGING_TYPES, strict=True)
    ]
    table = f"bench_{'bin' if binary else 'txt'}_{'tx' if per_transaction else 'conn'}"
    lifetime = "ON COMMIT DROP" if per_transaction else "ON COMMIT DELETE ROWS"
    ddl = (
        f"CREATE TEMP TABLE IF NOT EXISTS {table} ("
        + ", ".join(f"{c} {t}" for c, t in zip(CENTRAL_COLUMNS, types, strict=True))
        + f") {lifetime}"
    )
    cols = ", ".join(CENTRAL_COLUMNS)
    copy_sql = f"COPY {table} ({cols}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")
    insert = pg._INSERT.replace("finops_audit_staging", table)
    if not binary:
        insert = f"INSERT INTO audit_logs ({cols}) SELECT {cols} FROM {table} " + (
            "ORDER BY seq ON CONFLICT DO NOTHING"
        )

    made: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    def write(conn: psycopg.Connection[Any], rows: list[BufferedRow]) -> None:
        values, _ = central_rows(REPLICA.replica_id, rows)
        with conn.transaction(), conn.cursor() as cur:
            if per_transaction or conn not in made:
                cur.execute(ddl)
                made.add(conn)
            with cur.copy(copy_sql) as copy:
                if binary:
                    copy.set_types(types)
                for value in values:
                    copy.write_row(value)
            cur.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
            cur.execute(insert)
            _finish(cur, rows, cur.rowcount)

    return write


def write_unnest(conn: psycopg.Connection[Any], rows: list[BufferedRow]) -> None:
    values, _ = central_rows(REPLICA.replica_id, rows)
    columns = list(zip(*values, strict=True))
    cols = ", ".join(CENTRAL_COLUMNS)
    arrays = ", ".join(
        f"%s::{pg._CAST.get(c, t)}[]"
        for c, t in zip(CENTRAL_COLUMNS, pg._STAGING_TYPES, strict=True)
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        cur.execute(
            f"INSERT INTO audit_logs ({cols}) SELECT * FROM unnest({arrays}) "
            f"AS u ({cols}) ORDER BY seq ON CONFLICT DO NOTHING",
            [list(c) for c in columns],
        )
        _finish(cur, rows, cur.rowcount)


def write_executemany(conn: psycopg.Connection[Any], rows: list[BufferedRow]) -> None:
    values, _ = central_rows(REPLICA.replica_id, rows)
    cols = ", ".join(CENTRAL_COLUMNS)
    marks = ", ".join(
        f"%s::{pg._CAST.get(c, t)}" for c, t in zip(CENTRAL_COLUMNS, pg._STAGING_TYPES, strict=True)
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        cur.executemany(
            f"INSERT INTO audit_logs ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING", values
        )
        _finish(cur, rows, len(values))


def timed(url: str, batches: list[list[BufferedRow]], write: Writer) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(pg._STAGING_DDL)
        started = time.perf_counter()
        for batch in batches:
            write(conn, batch)
        return time.perf_counter() - started


def timed_sink(url: str, batches: list[list[BufferedRow]], resend: bool = False) -> float:
    sink = pg.PostgresSink(url, CHAINER)
    try:
        prev = GENESIS
        sink.send(REPLICA, batches[0][:1], prev)  # connect and check the schema first
        if resend:
            for batch in batches:
                sink.send(REPLICA, batch, prev)
        started = time.perf_counter()
        for batch in batches:
            sink.send(REPLICA, batch, prev)
            prev = batch[-1].row_hash or GENESIS
        return time.perf_counter() - started
    finally:
        sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]

    started = time.process_time()
    converted = [central_rows(REPLICA.replica_id, b) for b in batches]
    convert_us = (time.process_time() - started) / len(rows) * 1e6
    months = set().union(*(m for _, m in converted))
    months |= {max(months) + 1}

    def raw_copy(conn: psycopg.Connection[Any], batch: list[BufferedRow]) -> None:
        values = by_first[batch[0].seq]
        copy_sql = f"COPY audit_logs ({', '.join(CENTRAL_COLUMNS)}) FROM STDIN"
        with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as cp:
            for value in values:
                cp.write_row(value)

    by_first = {b[0].seq: v for b, (v, _) in zip(batches, converted, strict=True)}
    variants: dict[str, Callable[[str], float]] = {
        "raw COPY (baseline)": lambda url: timed(url, batches, raw_copy),
        "PostgresSink.send": lambda url: timed_sink(url, batches),
        "text COPY, typed staging": lambda url: timed(url, batches, staged(False, False)),
        "staging ON COMMIT DROP": lambda url: timed(url, batches, staged(True, True)),
        "INSERT … unnest(arrays)": lambda url: timed(url, batches, write_unnest),
        "executemany ON CONFLICT": lambda url: timed(url, batches, write_executemany),
        "PostgresSink.send, resend": lambda url: timed_sink(url, batches, resend=True),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    with temporary_postgres() as server:
        version = psycopg.connect(server.dsn).info.server_version
        for name in names:  # warm-up, not counted: caches, the first checkpoints
            variants[name](fresh_db(server.dsn, "bench_warmup", months))
        for run in range(args.runs):
            per_run: dict[str, float] = {}
            order = names[run % len(names) :] + names[: run % len(names)]  # rotate
            for index, name in enumerate(order):
                url = fresh_db(server.dsn, f"bench_{run}_{index}", months)
                per_run[name] = len(rows) / variants[name](url)
                results[name].append(per_run[name])
            for name, rate in per_run.items():
                ratios[name].append(rate / per_run["raw COPY (baseline)"])
            print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{per_run[n]:,.0f}" for n in names))

    print(
        f"\n{len(rows):,} rows in {len(batches)} batches of {args.batch:,}; PostgreSQL "
        f"{version // 10000}.{version % 100}, psycopg {psycopg.__version__}; "
        f"medians of {args.runs} runs; conversion alone {convert_us:.1f} µs/row (CPU)\n"
    )
    print(f"| {'variant':<28} | {'rows/s':>9} | {'vs raw COPY':>11} |")
    print(f"|{'-' * 30}|{'-' * 11}|{'-' * 13}|")
    for name in variants:
        print(
            f"| {name:<28} | {statistics.median(results[name]):>9,.0f} "
            f"| {statistics.median(ratios[name]):>11.2f} |"
        )


if __name__ == "__main__":
    main()
