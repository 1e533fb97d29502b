"""What redaction costs the writer: a diagnostic script, not a pytest module.

Prints, for the tree on ``sys.path`` (so two trees can be compared by running it
twice, once with ``PYTHONPATH`` pointing at the other's ``src``)::

    python benchmarks/redaction_cost.py [--calls 20000] [--rounds 5]

* the redaction pre-check and the row formatting, per batch of 52 typical rows
  (``KWARGS``), process CPU, median of 7 runs;
* the persisted pipeline (calls back to back, then ``flush()``), redaction on
  and off, against raw ``executemany`` of the same number of stored rows, 1,000
  a transaction: process CPU per row (all threads) and its ratio to raw, and
  wall-clock rows a second. Rounds are interleaved (raw, on, off, raw, ...) and
  the first is a warm-up; medians.

On a shared machine the wall-clock figures follow the disk's fsync latency;
the CPU figures are the ones to compare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from _support import (
    KWARGS,
    insert_batches,
    list_policies,
    open_raw,
    service_like_rows,
    started,
    sync_burst,
)
from finops_audit import AuditService, audit_tool_sync
from finops_audit._encoding import RowFormatter

BATCH = 52


def _per_call_us(fn: Callable[[], Any], n: int = 1_000) -> float:
    runs = []
    for _ in range(7):
        start = time.process_time_ns()
        for _ in range(n):
            fn()
        runs.append((time.process_time_ns() - start) / n / 1000)
    return statistics.median(runs)


def micro(folder: Path) -> dict[str, float]:
    svc = AuditService(db_path=folder / "redactor.db")  # only for its redactor
    redactor = svc.redactor
    raw = orjson.dumps(KWARGS)
    now = time.time_ns()
    entries = [
        ("list_policies", now + i * 1000, 1234, raw, "SUCCESS", None, None) for i in range(BATCH)
    ]
    raws = [raw] * BATCH
    on, off = RowFormatter(65_536, redactor), RowFormatter(65_536)
    out = {
        "pre-check, µs per batch": _per_call_us(lambda: redactor.candidates(raws)),
        "rows, redaction on, µs per batch": _per_call_us(lambda: on.rows(entries)),
        "rows, redaction off, µs per batch": _per_call_us(lambda: off.rows(entries)),
    }
    svc.close()
    return out


def pipeline(folder: Path, calls: int, rounds: int) -> dict[str, float]:
    rows = service_like_rows(calls)
    cpu: dict[str, list[float]] = {"raw": [], "on": [], "off": []}
    wall: dict[str, list[float]] = {"raw": [], "on": [], "off": []}
    for r in range(rounds + 1):
        for name in cpu:
            path = folder / f"{name}-{r}.db"
            if name == "raw":
                conn = open_raw(path)
                c0, w0 = time.process_time(), time.perf_counter()
                insert_batches(conn, rows)
                c, w = time.process_time() - c0, time.perf_counter() - w0
                conn.close()
            else:
                svc = started(AuditService(db_path=path, redact=name == "on"))
                burst = sync_burst(audit_tool_sync(service=svc)(list_policies), calls)
                c0, w0 = time.process_time(), time.perf_counter()
                burst()
                svc.flush()
                c, w = time.process_time() - c0, time.perf_counter() - w0
                svc.close()
            if r:  # round 0 warms up
                cpu[name].append(c)
                wall[name].append(w)
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    out: dict[str, float] = {}
    for name in ("raw", "on", "off"):
        out[f"CPU µs per row, {name}"] = med_cpu[name] / calls * 1e6
        out[f"rows/s (wall), {name}"] = calls / med_wall[name]
    for name in ("on", "off"):
        out[f"CPU ratio raw / pipeline, redaction {name}"] = med_cpu["raw"] / med_cpu[name]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = {**micro(Path(tmp)), **pipeline(Path(tmp), args.calls, args.rounds)}
    for label, value in figures.items():
        print(f"{label:45s} {value:12,.2f}")


if __name__ == "__main__":
    main()
