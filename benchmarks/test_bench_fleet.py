"""Benchmark 7: a fleet forwarding into PostgreSQL (issue 6), each figure against a baseline
measured in the same run.

* ``forward-throughput``: a replica's buffer of 200,000 rows, written before
  with forwarding off, forwarded in full (``forward_max_rate=0``, default batch
  of 5,000) by the real forwarder: a service on a copy of the buffer, timed
  from ``forward()`` to its return. Baseline: psycopg ``cursor.copy`` of the
  same rows, already converted, into the same partitioned table, one
  transaction per 5,000 rows: no deduplication, no id lock, no buffer reads.
* ``fleet``: 1 and 4 replica processes (``tests/fleet/replica.py``), each on its
  own buffer of 50,000 rows, forwarding into one database at once; timed from
  the moment every process is ready (imported, service built) until each has
  printed that ``forward()`` returned. Total rows/s; 4 against 1.
* ``overhead-forwarding``: the caller-overhead figure of benchmark 1 (rounds
  of 2,000 back-to-back sync calls, per call = median round / 2,000) with
  ``db_url`` set and the forwarder live: draining each round's rows
  (``live``) or a 200,000-row backlog at the default ``forward_max_rate``
  (``backlog``), beside the bare call, the same decorated call without
  forwarding, and stdlib ``logging`` through a ``QueueHandler``. Target: what
  auditing adds is at most a quarter of the ``QueueHandler`` call.

Every round starts on a fresh database (schema and month partitions made in
setup) and fresh copies of the buffers. The server is ``AUDIT_TEST_PG_DSN``
(a superuser DSN) or a throw-away one (``temporary_postgres()``). A summary
of medians and ratios is printed at the end of the module; timings are
reported, never asserted (correctness is: every row arrives exactly once).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from _support import BURST, KWARGS, list_policies, started, sync_burst
from finops_audit import AuditService, audit_tool_sync

psycopg = pytest.importorskip("psycopg")

from finops_audit.forwarding._pg_rows import central_rows  # noqa: E402
from finops_audit.forwarding.base import BUFFER_COLUMNS, BufferedRow  # noqa: E402
from finops_audit.storage._pg_schema import (  # noqa: E402
    CENTRAL_COLUMNS,
    SCHEMA_STATEMENTS,
    partition_ddl,
)
from test_bench_overhead import QueueLogging  # noqa: E402

BIG = 200_000
PER_REPLICA = 50_000
FLEET_SIZES = (1, 4)
ROUNDS = 3
COPY_BATCH = 5_000  # the forwarder's default forward_batch_size
REPLICA_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "fleet" / "replica.py"
SUSTAINED_ROUNDS = 150
OVERHEAD_ROLES = ("baseline", "audited-local", "forwarding-live", "forwarding-backlog")

#: Medians gathered by the tests of this module, printed at its end.
RESULTS: dict[str, float] = {}


# ---------------------------------------------------------------------- the server


@dataclass
class Server:
    admin_dsn: str
    made: list[str] = field(default_factory=list)
    _names: Iterator[int] = field(default_factory=itertools.count)

    def fresh_db(self) -> str:
        """A new database with the central schema and this and next month's partitions."""
        self.drop_all()  # one round's data at a time: disk stays small
        name = f"fleet_bench_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        self.made.append(name)
        url = urlunsplit(urlsplit(self.admin_dsn)._replace(path=f"/{name}"))
        now = datetime.now(timezone.utc)
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in SCHEMA_STATEMENTS:
                conn.execute(statement)
            conn.execute(partition_ddl(now))
            conn.execute(partition_ddl(now + timedelta(days=32)))
        return url

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            while self.made:
                conn.execute(f"DROP DATABASE IF EXISTS {self.made.pop()} WITH (FORCE)")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    external = os.environ.get("AUDIT_TEST_PG_DSN")
    if external:
        srv = Server(external)
        yield srv
        srv.drop_all()
        return
    from finops_audit._pgserver import find_pg_bin, temporary_postgres

    if find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries not found and AUDIT_TEST_PG_DSN not set")
    with temporary_postgres() as pg:
        srv = Server(pg.dsn)
        yield srv
        srv.drop_all()


def central_counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM audit_logs").fetchone()
    return int(row[0]), int(row[1])


# ---------------------------------------------------------------------- buffers


def build_buffer(path: Path, rows: int) -> Path:
    """``rows`` audited calls recorded by a service without forwarding: a full buffer."""
    with AuditService(db_path=path, handle_signals=False) as svc:
        fn = audit_tool_sync(service=svc)(list_policies)
        kw = KWARGS
        for _ in range(rows):
            fn(**kw)
    return path


def copy_buffer(src: Path, dest: Path, new_event_ids: bool = False) -> Path:
    """A consistent copy; ``new_event_ids`` makes it another replica's (the chain ignores ids)."""
    with sqlite3.connect(src) as source, sqlite3.connect(dest) as target:
        source.backup(target)
        if new_event_ids:
            target.execute("UPDATE audit_logs SET event_id = lower(hex(randomblob(16)))")
    source.close()
    target.close()
    return dest


@dataclass
class Templates:
    big: Path
    replicas: list[Path]


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    folder = tmp_path_factory.mktemp("fleet_buffers")
    big = build_buffer(folder / "big.db", BIG)
    first = build_buffer(folder / "replica-0.db", PER_REPLICA)
    others = [
        copy_buffer(first, folder / f"replica-{k}.db", new_event_ids=True)
        for k in range(1, max(FLEET_SIZES))
    ]
    return Templates(big, [first, *others])


def buffered_rows(path: Path) -> list[BufferedRow]:
    columns = ", ".join(f'"{c}"' if c == "user" else c for c in BUFFER_COLUMNS)
    with sqlite3.connect(path) as conn:
        rows = [BufferedRow(*r) for r in conn.execute(f"SELECT {columns} FROM audit_logs")]
    conn.close()
    return rows


def _median(benchmark: Any) -> float | None:
    stats = getattr(benchmark, "stats", None)
    inner = getattr(stats, "stats", None)
    return float(inner.median) if inner is not None else None


def _record(name: str, benchmark: Any) -> None:
    median = _median(benchmark)
    if median is not None:
        RESULTS[name] = median
        benchmark.extra_info["median_s"] = median


# ---------------------------------------------------------------------- (i) throughput


@pytest.mark.timeout(900)
@pytest.mark.benchmark(group="7-fleet-forward-throughput")
def test_forward_full_buffer(
    benchmark: Any, server: Server, templates: Templates, tmp_path: Path
) -> None:
    made: list[tuple[AuditService, str]] = []
    rounds = itertools.count()

    def setup() -> tuple[tuple[AuditService], dict[str, Any]]:
        for svc, _ in made:
            svc.close()
        url = server.fresh_db()
        path = copy_buffer(templates.big, tmp_path / f"round-{next(rounds)}.db")
        svc = AuditService(db_path=path, db_url=url, forward_max_rate=0, handle_signals=False)
        made.append((svc, url))
        return (svc,), {}

    def forward(svc: AuditService) -> None:
        svc.forward(timeout=600)

    benchmark.extra_info.update({"figure": "fleet", "role": "forwarder", "rows": BIG})
    benchmark.pedantic(forward, setup=setup, rounds=ROUNDS, warmup_rounds=0)
    svc, url = made[-1]
    svc.close()
    assert central_counts(url) == (BIG, BIG)
    _record("forward", benchmark)


@pytest.mark.timeout(900)
@pytest.mark.benchmark(group="7-fleet-forward-throughput")
def test_raw_copy_baseline(benchmark: Any, server: Server, templates: Templates) -> None:
    values, _ = central_rows("bench", buffered_rows(templates.big))
    copy_sql = f"COPY audit_logs ({', '.join(CENTRAL_COLUMNS)}) FROM STDIN"
    conns: list[tuple[Any, str]] = []

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        for conn, _ in conns:
            conn.close()
        url = server.fresh_db()
        conn = psycopg.connect(url)
        conns.append((conn, url))
        return (conn,), {}

    def copy(conn: Any) -> None:
        with conn.cursor() as cur:
            for i in range(0, len(values), COPY_BATCH):
                with conn.transaction(), cur.copy(copy_sql) as cp:
                    for value in values[i : i + COPY_BATCH]:
                        cp.write_row(value)

    benchmark.extra_info.update({"figure": "fleet", "role": "raw-copy", "rows": BIG})
    benchmark.pedantic(copy, setup=setup, rounds=ROUNDS, warmup_rounds=0)
    conn, url = conns[-1]
    conn.close()
    assert central_counts(url) == (BIG, BIG)
    _record("raw_copy", benchmark)


# ---------------------------------------------------------------------- (ii) fleet


class ReplicaProcess:
    """``replica.py`` that forwards its buffer once it reads ``go``; waits are bounded."""

    def __init__(self, db: Path, url: str, replica_id: str) -> None:
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(REPLICA_SCRIPT),
                *("--db", str(db), "--url", url, "--replica-id", replica_id),
                *("--max-rate", "0", "--forward-wait", "600", "--wait-go"),
            ],
            cwd=db.parent,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def read(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            item: dict[str, Any] = json.loads(line)
            if item["event"] == event:
                return item
        raise AssertionError(f"replica exited ({self.proc.wait(30)}) before {event!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        if self.proc.wait(timeout=60) != 0:
            raise AssertionError(f"replica exited with {self.proc.returncode}")


@pytest.mark.timeout(900)
@pytest.mark.benchmark(group="7-fleet-replicas")
@pytest.mark.parametrize("replicas", FLEET_SIZES)
def test_fleet_forwarding(
    benchmark: Any, server: Server, templates: Templates, tmp_path: Path, replicas: int
) -> None:
    rounds = itertools.count()
    urls: list[str] = []
    spans: list[float] = []  # per round: first forward() start to last return, in-process

    def setup() -> tuple[tuple[list[ReplicaProcess]], dict[str, Any]]:
        url = server.fresh_db()
        urls.append(url)
        folder = tmp_path / f"round-{next(rounds)}"
        folder.mkdir()
        procs = [
            ReplicaProcess(copy_buffer(templates.replicas[k], folder / f"r{k}.db"), url, f"r{k}")
            for k in range(replicas)
        ]
        for proc in procs:
            proc.read("ready")
        return (procs,), {}

    def forward_all(procs: list[ReplicaProcess]) -> None:
        for proc in procs:
            proc.go()
        summaries = [proc.read("summary") for proc in procs]
        for proc in procs:
            proc.finish()
        spans.append(max(s["forwarded"] for s in summaries) - min(s["started"] for s in summaries))
        for s in summaries:
            assert s["forward_error"] is None, s["forward_error"]

    total = replicas * PER_REPLICA
    benchmark.extra_info.update({"figure": "fleet", "replicas": replicas, "rows": total})
    benchmark.pedantic(forward_all, setup=setup, rounds=ROUNDS, warmup_rounds=0)
    assert central_counts(urls[-1]) == (total, total)
    spans.sort()
    benchmark.extra_info["in_process_median_s"] = spans[len(spans) // 2]
    RESULTS[f"fleet_{replicas}_in_process"] = spans[len(spans) // 2]
    _record(f"fleet_{replicas}", benchmark)


# ---------------------------------------------------------------------- (iii) overhead


@pytest.fixture
def qlog() -> Iterator[QueueLogging]:
    ql = QueueLogging()
    yield ql
    ql.stop()


def _overhead_service(tmp_path: Path, url: str | None, backlog: Path | None = None) -> AuditService:
    path = tmp_path / "overhead.db"
    if backlog is not None:
        copy_buffer(backlog, path)
    svc = AuditService(
        db_path=path,
        db_url=url,
        queue_size=1_000_000,
        overflow_policy="drop",
        handle_signals=False,
    )
    return started(svc)


@pytest.mark.timeout(900)
@pytest.mark.benchmark(group="7-fleet-overhead")
@pytest.mark.parametrize(
    "role", ["baseline", "audited-local", "forwarding-live", "forwarding-backlog"]
)
def test_sync_overhead_with_forwarding(
    benchmark: Any, server: Server, templates: Templates, tmp_path: Path, role: str
) -> None:
    url = server.fresh_db() if role.startswith("forwarding") else None
    backlog = templates.big if role == "forwarding-backlog" else None
    svc = _overhead_service(tmp_path, url, backlog)
    try:
        fn: Callable[..., Any] = list_policies
        if role != "baseline":
            fn = audit_tool_sync(service=svc)(list_policies)
        benchmark.extra_info.update({"figure": "fleet-overhead", "role": role, "calls": BURST})
        benchmark.pedantic(
            sync_burst(fn), setup=svc.flush, rounds=SUSTAINED_ROUNDS, warmup_rounds=3
        )
        svc.flush()
        stats = svc.stats()
        assert stats.dropped == 0
        if url is not None:
            # the forwarder really worked while the calls were timed
            forwarded = stats.forwarding["postgres"].forwarded
            benchmark.extra_info["forwarded_meanwhile"] = forwarded
            benchmark.extra_info["lag_after"] = stats.forward_lag_entries
            if benchmark.disabled:
                # A one-round smoke run times nothing and may end before the
                # forwarder's first batch: check it delivers (bounded wait).
                deadline = time.monotonic() + 60
                while forwarded == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                    forwarded = svc.stats().forwarding["postgres"].forwarded
            assert forwarded > 0
    finally:
        svc.close(timeout=30)
    _record(f"overhead_{role}", benchmark)


@pytest.mark.benchmark(group="7-fleet-overhead")
def test_queuehandler_overhead(benchmark: Any, qlog: QueueLogging) -> None:
    call = qlog.call

    def burst() -> None:
        for _ in range(BURST):
            call()

    benchmark.extra_info.update({"figure": "fleet-overhead", "role": "queuehandler"})
    benchmark.pedantic(burst, setup=qlog.drain, rounds=SUSTAINED_ROUNDS, warmup_rounds=3)
    _record("overhead_queuehandler", benchmark)


# ---------------------------------------------------------------------- summary


def _lines() -> list[str]:
    r = RESULTS
    out = ["", "fleet benchmarks (medians; ratios within this run)"]
    if "forward" in r and "raw_copy" in r:
        fwd, raw = BIG / r["forward"], BIG / r["raw_copy"]
        out.append(
            f"  forwarding {BIG:,} rows: {fwd:,.0f} rows/s; raw COPY {raw:,.0f} rows/s; "
            f"ratio {fwd / raw:.2f}"
        )
    if all(f"fleet_{n}" in r for n in FLEET_SIZES):
        rates = {n: n * PER_REPLICA / r[f"fleet_{n}"] for n in FLEET_SIZES}
        inner = {n: n * PER_REPLICA / r[f"fleet_{n}_in_process"] for n in FLEET_SIZES}
        lo, hi = min(FLEET_SIZES), max(FLEET_SIZES)
        out.append(
            "  fleet: "
            + "; ".join(f"{n} replica(s) {rates[n]:,.0f} rows/s" for n in FLEET_SIZES)
            + f"; {hi} vs {lo}: x{rates[hi] / rates[lo]:.2f} "
            f"(in-process spans: x{inner[hi] / inner[lo]:.2f})"
        )
    base, qh = r.get("overhead_baseline"), r.get("overhead_queuehandler")
    if base is not None and qh is not None:
        qh_us = qh / BURST * 1e6
        out.append(f"  queuehandler call {qh_us:.2f} us; bare call {base / BURST * 1e6:.3f} us")
        for role in ("audited-local", "forwarding-live", "forwarding-backlog"):
            value = r.get(f"overhead_{role}")
            if value is not None:
                added = (value - base) / BURST * 1e6
                out.append(
                    f"  {role}: adds {added:.2f} us per call; "
                    f"{added / qh_us:.2f} of the QueueHandler call (target <= 0.25)"
                )
    return out


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the medians and ratios once the module is done (past pytest's capture)."""
    yield
    if not RESULTS:
        return
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(_lines()), flush=True)
