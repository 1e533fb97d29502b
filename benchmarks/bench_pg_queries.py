"""get_logs and tool_stats on 1,000,000 rows: central PostgreSQL against SQLite, same run.

    python benchmarks/bench_pg_queries.py [--rows 1000000] [--json out.json] [--retention]

Starts its own throw-away PostgreSQL (``temporary_postgres``), generates one
trail (50 tools with a skewed mix, one rare tool at 0.1%, 2% failures, 60 days
ending now, ~150-byte parameters), loads it with ``COPY`` into the central
schema and with ``executemany`` into a SQLite file, then times the stores'
own calls (``PostgresAuditStore`` / ``SQLiteAuditStore``: query, model
building included) and reports medians, PostgreSQL's ``EXPLAIN ANALYZE`` for
each case, the generic-plan trap that ``plan_cache_mode=force_custom_plan``
avoids, and (``--retention``) a month dropped as a partition against the same
rows deleted in batches.

Not a pytest module (``pytest`` never collects ``benchmarks/bench_*.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import psycopg

from finops_audit._chain import Chainer
from finops_audit._pgserver import temporary_postgres
from finops_audit.models import AuditStatus
from finops_audit.storage import _pg_queries as pg_sql
from finops_audit.storage._pg_schema import SCHEMA_STATEMENTS, partition_ddl
from finops_audit.storage.base import LogQuery
from finops_audit.storage.postgres import PostgresAuditStore
from finops_audit.storage.sqlite import _SCHEMA, SQLiteAuditStore, format_timestamp

TOOLS = 50
RARE_TOOL = "tool_rare"
COMMON_TOOL = "tool_00"
FAILURE_RATE = 0.02
ERRORS = (
    "ValueError: unknown region 'eu-north-9'",
    "PermissionError: access denied to account 123456789012",
    "TimeoutError: cost explorer did not answer within 30s",
    "KeyError: 'CostCenter'",
)


# ---------------------------------------------------------------------- the trail


def tool_mix() -> tuple[list[str], list[float]]:
    """49 tools with Zipf-like weights summing to 99.9%, plus the rare one at 0.1%."""
    names = [f"tool_{i:02d}" for i in range(TOOLS - 1)]
    raw = [1 / (i + 1) for i in range(TOOLS - 1)]
    scale = 99.9 / sum(raw)
    return [*names, RARE_TOOL], [w * scale for w in raw] + [0.1]


def generate(n: int, seed: int = 20261128) -> tuple[list[tuple[Any, ...]], int, int]:
    """``n`` rows (ts, tool, params, status, error, ms), increasing in time; start, end (µs)."""
    rng = random.Random(seed)
    names, weights = tool_mix()
    end_us = int(time.time()) * 1_000_000
    start_us = end_us - 60 * 86_400 * 1_000_000
    step = (end_us - start_us) // n
    pools = {
        t: [
            orjson.dumps(
                {
                    "account_id": f"{rng.randrange(10**11, 10**12)}",
                    "region": rng.choice(("us-east-1", "eu-west-1", "ap-southeast-2")),
                    "granularity": rng.choice(("DAILY", "MONTHLY")),
                    "filters": {"environment": rng.choice(("prod", "dev")), "tool": t},
                }
            ).decode()
            for _ in range(32)
        ]
        for t in names
    }
    tools = rng.choices(names, weights, k=n)
    rows: list[tuple[Any, ...]] = []
    for i, tool in enumerate(tools):
        ts = start_us + i * step + rng.randrange(step)
        stamp = format_timestamp(datetime.fromtimestamp(ts / 1_000_000, timezone.utc))
        ms = round(rng.lognormvariate(3.0, 1.0), 3)
        if rng.random() < FAILURE_RATE:
            rows.append((stamp, tool, rng.choice(pools[tool]), "FAILURE", rng.choice(ERRORS), ms))
        else:
            rows.append((stamp, tool, rng.choice(pools[tool]), "SUCCESS", None, ms))
    return rows, start_us, end_us


def build_sqlite(path: Path, rows: list[tuple[Any, ...]]) -> float:
    began = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.executescript(_SCHEMA)
    insert = (
        "INSERT INTO audit_logs (timestamp, tool_name, parameters, status, error_message, "
        "execution_time_ms, event_id) VALUES (?, ?, ?, ?, ?, ?, lower(hex(randomblob(16))))"
    )
    for start in range(0, len(rows), 50_000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows[start : start + 50_000])
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - began


def central_rows(rows: list[tuple[Any, ...]], first_seq: int) -> Iterator[tuple[Any, ...]]:
    """The central columns of each row, as the sink stores a chained row (hash made up)."""
    for seq, (ts, tool, params, status, error, ms) in enumerate(rows, first_seq):
        yield (
            uuid.uuid4(),
            "bench",
            seq,
            ts,
            tool,
            params,
            params,
            status,
            error,
            ms,
            f"{seq:064x}",
        )


_COPY_COLUMNS = (
    "event_id, replica_id, seq, timestamp, tool_name, parameters, parameters_text, status, "
    "error_message, execution_time_ms, row_hash"
)


def build_postgres(url: str, rows: list[tuple[Any, ...]], start_us: int, end_us: int) -> float:
    """Schema, monthly partitions, COPY (ids from the sequence, in seq order), VACUUM ANALYZE."""
    began = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SCHEMA_STATEMENTS:
            conn.execute(statement)
        month = datetime.fromtimestamp(start_us / 1_000_000, timezone.utc)
        last = datetime.fromtimestamp(end_us / 1_000_000, timezone.utc) + timedelta(days=32)
        while month < last:
            conn.execute(partition_ddl(month))
            month = (month.replace(day=1) + timedelta(days=32)).replace(day=1)
        with conn.cursor() as cur:
            for start in range(0, len(rows), 100_000):
                copy_sql = f"COPY audit_logs ({_COPY_COLUMNS}) FROM STDIN"
                with conn.transaction(), cur.copy(copy_sql) as copy:
                    for row in central_rows(rows[start : start + 100_000], start + 1):
                        copy.write_row(row)
        conn.execute("VACUUM ANALYZE audit_logs")
    return time.perf_counter() - began


# ---------------------------------------------------------------------- timing


def median_ms(
    run: Callable[[], Awaitable[Any]], rounds: int, loop: asyncio.AbstractEventLoop
) -> float:
    for _ in range(min(5, rounds)):
        loop.run_until_complete(run())
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        loop.run_until_complete(run())
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def cases(start_us: int, end_us: int) -> dict[str, LogQuery]:
    middle = (start_us + end_us) // 2
    since = datetime.fromtimestamp(middle // 1_000_000, timezone.utc)
    return {
        "tool-common": LogQuery(tool_name=COMMON_TOOL),
        "tool-rare": LogQuery(tool_name=RARE_TOOL),
        "status-failure": LogQuery(status=AuditStatus.FAILURE),
        "time-1h": LogQuery(since=since, until=since + timedelta(hours=1)),
        "tool-rare-offset-500": LogQuery(tool_name=RARE_TOOL, offset=500),
        # 0.1% of rows hold this text: a backward scan of ~100,000 rows' parameters
        "parameter-value-rare": LogQuery(parameter_value=RARE_TOOL),
    }


def explain(url: str, query: str, params: list[Any]) -> list[str]:
    with psycopg.connect(url) as conn:
        conn.execute("SET plan_cache_mode = force_custom_plan")
        return [
            r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {query}", params)
        ]


def generic_plan_trap(url: str, query: LogQuery, rounds: int = 50) -> dict[str, float]:
    """The rare-tool page through a prepared statement under each plan_cache_mode."""
    sql, params = pg_sql.build_select(query)
    out = {}
    for mode in ("force_custom_plan", "auto", "force_generic_plan"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"SET plan_cache_mode = {mode}")
            for _ in range(10):  # past psycopg's prepare_threshold (5) and PostgreSQL's 5 customs
                conn.execute(sql, params, prepare=True).fetchall()
            samples = []
            for _ in range(rounds):
                began = time.perf_counter()
                conn.execute(sql, params, prepare=True).fetchall()
                samples.append((time.perf_counter() - began) * 1000)
        out[mode] = statistics.median(samples)
    return out


def tool_stats_experiments(url: str) -> dict[str, float]:
    """tool_stats' SQL (seconds, EXPLAIN ANALYZE execution) under variations worth knowing."""
    query, params = pg_sql.tool_stats_sql(LogQuery())

    def timed(conn: psycopg.Connection[Any]) -> float:
        plan = [r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {query}", params)]
        line = next(p for p in plan if p.startswith("Execution Time"))
        return round(float(line.split()[2]) / 1000, 2)

    out: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        out["default work_mem (4MB)"] = timed(conn)
        conn.execute("SET work_mem = '64MB'")
        out["work_mem 64MB"] = timed(conn)
        conn.execute("RESET work_mem")
        began = time.perf_counter()
        conn.execute(
            "CREATE INDEX bench_tool_ms ON audit_logs "
            "(tool_name, execution_time_ms NULLS FIRST) INCLUDE (status)"
        )
        conn.execute("VACUUM ANALYZE audit_logs")
        out["index build (s)"] = round(time.perf_counter() - began, 2)
        out["index (tool_name, ms NULLS FIRST) INCLUDE (status)"] = timed(conn)
        conn.execute("DROP INDEX bench_tool_ms")
        sql_disc = (
            "SELECT tool_name, count(*), count(*) FILTER (WHERE status = 'FAILURE'), "
            "avg(execution_time_ms), percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
            "(ORDER BY execution_time_ms), max(execution_time_ms) FROM audit_logs "
            "WHERE tool_name <> '__audit_gap__' GROUP BY tool_name"
        )
        plan = [r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {sql_disc}")]
        line = next(p for p in plan if p.startswith("Execution Time"))
        out["percentile_disc (NULLs skipped, reference)"] = round(float(line.split()[2]) / 1000, 2)
    return out


# ---------------------------------------------------------------------- retention


def wal_bytes(conn: psycopg.Connection[Any], since: str) -> int:
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (since,)).fetchone()
    return int(row[0]) if row else 0


def retention(admin_dsn: str, url: str, cutoff: datetime) -> dict[str, Any]:
    """Purge the month before ``cutoff``: as a partition drop, and (on a copy of the
    database) as batched DELETEs with a cutoff one microsecond earlier, plus VACUUM."""
    base = url.rsplit("/", 1)[0]
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE bench_delete TEMPLATE bench")
    previous = (cutoff - timedelta(days=1)).replace(day=1)
    results: dict[str, Any] = {}
    for label, db, when in (
        ("partition-drop", "bench", cutoff),
        ("batched-delete", "bench_delete", cutoff - timedelta(microseconds=1)),
    ):
        target = f"{base}/{db}"
        asyncio.run(_purge(target, previous))  # the month before that: dropped, not timed
        with psycopg.connect(target, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            lsn = row[0] if row else "0/0"
            began = time.perf_counter()
            report = asyncio.run(_purge(target, when))
            purge_s = time.perf_counter() - began
            vacuum_began = time.perf_counter()
            conn.execute("VACUUM audit_logs")
            vacuum_s = time.perf_counter() - vacuum_began
            results[label] = {
                "rows": report.rows_deleted,
                "batches": report.batches,
                "purge_s": round(purge_s, 3),
                "vacuum_s": round(vacuum_s, 3),
                "wal_mb": round(wal_bytes(conn, lsn) / 2**20, 1),
            }
            print(f"retention {label}: {results[label]}", flush=True)
    return results


async def _purge(url: str, cutoff: datetime) -> Any:
    store = PostgresAuditStore(url)
    try:
        return await store.purge(cutoff, Chainer())
    finally:
        await store.close()


# ---------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--retention", action="store_true", help="also time a month's purge")
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"))
    args = parser.parse_args()

    print(f"generating {args.rows:,} rows ...", flush=True)
    rows, start_us, end_us = generate(args.rows)
    sqlite_path = args.tmp / f"bench_pg_queries_{uuid.uuid4().hex[:8]}.db"
    result: dict[str, Any] = {"rows": args.rows}
    try:
        result["sqlite_build_s"] = round(build_sqlite(sqlite_path, rows), 1)
        print(f"sqlite built in {result['sqlite_build_s']} s", flush=True)
        with temporary_postgres() as server:
            with psycopg.connect(server.dsn, autocommit=True) as admin:
                admin.execute("CREATE DATABASE bench")
            url = server.dsn.rsplit("/", 1)[0] + "/bench"
            result["postgres_build_s"] = round(build_postgres(url, rows, start_us, end_us), 1)
            print(f"postgres built in {result['postgres_build_s']} s", flush=True)
            del rows
            result.update(run_queries(url, sqlite_path, start_us, end_us, args.rounds))
            result["generic_plan_trap_ms"] = generic_plan_trap(url, LogQuery(tool_name=RARE_TOOL))
            result["tool_stats_experiments_s"] = tool_stats_experiments(url)
            print("tool_stats experiments:", result["tool_stats_experiments_s"], flush=True)
            if args.retention:
                cutoff = datetime.fromtimestamp(end_us / 1_000_000, timezone.utc).replace(
                    day=1, hour=0, minute=0, second=0, microsecond=0
                )
                result["retention"] = retention(server.dsn, url, cutoff)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
    report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def run_queries(
    url: str, sqlite_path: Path, start_us: int, end_us: int, rounds: int
) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    pg = PostgresAuditStore(url)
    lite = SQLiteAuditStore(sqlite_path)
    out: dict[str, Any] = {"get_logs_ms": {}, "plans": {}}
    try:
        for name, query in cases(start_us, end_us).items():
            pg_ms = median_ms(lambda q=query: pg.query(q), rounds, loop)  # type: ignore[misc]
            lite_ms = median_ms(lambda q=query: lite.query(q), rounds, loop)  # type: ignore[misc]
            n = len(loop.run_until_complete(pg.query(query)))
            out["get_logs_ms"][name] = {
                "postgres": round(pg_ms, 2),
                "sqlite": round(lite_ms, 2),
                "rows": n,
            }
            out["plans"][name] = explain(url, *pg_sql.build_select(query))
            print(f"get_logs {name}: postgres {pg_ms:.2f} ms, sqlite {lite_ms:.2f} ms", flush=True)
        stats_q = LogQuery()
        pg_s = median_ms(lambda: pg.tool_stats(stats_q), 3, loop) / 1000
        lite_s = median_ms(lambda: lite.tool_stats(stats_q), 3, loop) / 1000
        same = loop.run_until_complete(pg.tool_stats(stats_q)) == loop.run_until_complete(
            lite.tool_stats(stats_q)
        )
        out["tool_stats_s"] = {
            "postgres": round(pg_s, 2),
            "sqlite": round(lite_s, 2),
            "equal": same,
        }
        out["plans"]["tool_stats"] = explain(url, *pg_sql.tool_stats_sql(stats_q))
        print(f"tool_stats: postgres {pg_s:.2f} s, sqlite {lite_s:.2f} s, equal={same}", flush=True)
        week = LogQuery(
            since=datetime.fromtimestamp(end_us / 1e6, timezone.utc) - timedelta(days=7)
        )
        pg_w = median_ms(lambda: pg.tool_stats(week), 3, loop) / 1000
        lite_w = median_ms(lambda: lite.tool_stats(week), 3, loop) / 1000
        out["tool_stats_7d_s"] = {"postgres": round(pg_w, 2), "sqlite": round(lite_w, 2)}
        print(f"tool_stats last 7 days: postgres {pg_w:.2f} s, sqlite {lite_w:.2f} s", flush=True)
    finally:
        loop.run_until_complete(pg.close())
        loop.run_until_complete(lite.close())
        loop.close()
    return out


def report(result: dict[str, Any]) -> None:
    print()
    print(f"| get_logs on {result['rows']:,} rows (median ms) | PostgreSQL | SQLite | rows |")
    print("|---|---|---|---|")
    for name, r in result["get_logs_ms"].items():
        print(f"| {name} | {r['postgres']} | {r['sqlite']} | {r['rows']} |")
    ts = result["tool_stats_s"]
    print(
        f"| tool_stats, all rows (s) | {ts['postgres']} | {ts['sqlite']} | equal: {ts['equal']} |"
    )
    tw = result["tool_stats_7d_s"]
    print(f"| tool_stats, last 7 days (s) | {tw['postgres']} | {tw['sqlite']} | |")
    print()
    print("prepared rare-tool page by plan_cache_mode (median ms):", result["generic_plan_trap_ms"])
    print("tool_stats variations (s):", result["tool_stats_experiments_s"])
    if "retention" in result:
        print("retention of one month:", json.dumps(result["retention"], indent=2))
    for name, plan in result["plans"].items():
        print(f"\n--- {name}")
        print("\n".join(plan))


if __name__ == "__main__":
    sys.exit(main())
