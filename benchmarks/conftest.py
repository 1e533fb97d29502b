"""Fixtures for the benchmarks: fresh services on temporary files, and a 1,000,000-row trail.

Run with ``pytest benchmarks --benchmark-only`` (``pytest`` alone collects only
``tests/``).
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from _support import (
    ERRORS,
    FAILURE_RATE,
    INSERT,
    TOOL_MIX,
    BigTrail,
    RowLinker,
    chunks,
    iso,
    open_raw,
    started,
)
from finops_audit import AuditService

# ---------------------------------------------------------------------- services


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., AuditService]]:
    """``make(**settings)``: a new service on its own file under ``tmp_path``; all closed after."""
    made: list[AuditService] = []

    def make(**overrides: Any) -> AuditService:
        svc = AuditService(db_path=tmp_path / f"audit-{len(made)}.db", **overrides)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


@pytest.fixture
def service(service_factory: Callable[..., AuditService]) -> AuditService:
    """A service with the default settings (batch 1,000, 50 ms window, FULL), writer started."""
    return started(service_factory())


# ---------------------------------------------------------------------- the big trail


def _params(rng: random.Random, tool: str) -> dict[str, Any]:
    return {
        "account_id": f"{rng.randrange(10**11, 10**12)}",
        "region": rng.choice(("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2")),
        "granularity": rng.choice(("DAILY", "MONTHLY")),
        "filters": {"environment": rng.choice(("prod", "staging", "dev")), "tool": tool},
    }


@pytest.fixture(scope="session")
def big_trail(tmp_path_factory: pytest.TempPathFactory) -> BigTrail:
    """1,000,000 rows written with raw ``sqlite3`` ``executemany`` into our schema, once.

    Ten tools with a skewed mix (one at 0.1%), 5% failures, timestamps increasing
    over 30 days ending now, parameters of a realistic size (~150 bytes of JSON),
    ids and chained row hashes as the writer stores them (schema v2).
    No ``ANALYZE``: the service never runs it, so neither does a real trail.
    """
    n = 1_000_000
    path = tmp_path_factory.mktemp("trail") / "audit_1m.db"
    rng = random.Random(20261128)
    names = list(TOOL_MIX)
    weights = list(TOOL_MIX.values())
    end_us = int(time.time()) * 1_000_000
    start_us = end_us - 30 * 86_400 * 1_000_000
    step = (end_us - start_us) // n
    counts = dict.fromkeys(names, 0)
    failures = 0
    tools = rng.choices(names, weights, k=n)
    # A pool of parameter texts per tool keeps generation fast while sizes stay realistic.
    pools = {t: [orjson.dumps(_params(rng, t)).decode() for _ in range(64)] for t in names}

    def rows() -> Iterator[tuple[Any, ...]]:
        nonlocal failures
        for i, tool in enumerate(tools):
            counts[tool] += 1
            ts = start_us + i * step + rng.randrange(step)  # strictly increasing
            elapsed = round(rng.lognormvariate(3.0, 1.0), 3)
            if rng.random() < FAILURE_RATE:
                failures += 1
                error = rng.choice(ERRORS)
                yield (iso(ts), tool, rng.choice(pools[tool]), "FAILURE", error, elapsed)
            else:
                yield (iso(ts), tool, rng.choice(pools[tool]), "SUCCESS", None, elapsed)

    began = time.perf_counter()
    path.touch(mode=0o600)  # as the service creates its file: -wal and -shm copy the mode
    conn = open_raw(path, synchronous="OFF")
    link = RowLinker()  # ids and a real hash chain, as the writer stores them
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for batch in chunks(rows(), 50_000):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, link(batch))
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (total,) = conn.execute("SELECT count(*) FROM audit_logs").fetchone()
    finally:
        if gc_was:
            gc.enable()
        conn.close()
    assert total == n
    return BigTrail(
        path=path,
        rows=n,
        start_us=start_us,
        end_us=end_us,
        counts=counts,
        failures=failures,
        build_seconds=time.perf_counter() - began,
    )


@pytest.fixture(scope="module")
def trail_service(big_trail: BigTrail) -> Iterator[AuditService]:
    """An :class:`AuditService` pointed at the 1M-row trail, writer and reader already open."""
    svc = AuditService(db_path=big_trail.path)
    svc.get_logs(limit=1)  # opens the writer (schema check) and the reader connection
    yield svc
    svc.close()
