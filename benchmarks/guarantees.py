"""Measure the figures behind the README's Guarantees section (not a pytest module).

1. The SIGKILL loss window at the default settings: a child makes audited calls
   numbered 1, 2, 3, ... (flat out, or paced at a steady rate) and reports the
   last accepted number every 500 calls; after about a second it is killed with
   SIGKILL. Missing = reported numbers not on disk; their time span = missing / rate.
2. Throughput of 1, 2 and 4 processes writing to one file at the same time:
   each makes ``--calls`` audited calls flat out and closes its service; total
   rows per second from the first start to the last close.

Usage: ``python benchmarks/guarantees.py [--kills 5] [--calls 50000]``.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

KILL_CHILD = """
import sys, time
from finops_audit import audit_tool_sync

@audit_tool_sync
def record_usage(seq: int) -> int:
    return seq

rate = float(sys.argv[1])  # calls per second; 0 means flat out
step = max(1, int(rate // 1000))  # pace in steps of about 1 ms
t0 = time.monotonic()
seq = 0
while True:
    seq += 1
    record_usage(seq=seq)
    if seq % 500 == 0:
        print(seq, time.monotonic(), flush=True)
    if rate and seq % step == 0:
        ahead = t0 + seq / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
"""

WRITER_CHILD = """
import sys, time
from finops_audit import AuditService, audit_tool_sync

worker, calls = int(sys.argv[1]), int(sys.argv[2])
svc = AuditService()  # AUDIT_DB_PATH, default settings

@audit_tool_sync(service=svc)
def record_usage(worker: int, seq: int) -> int:
    return seq

svc.flush()  # schema ready before the clock starts
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
for seq in range(calls):
    record_usage(worker=worker, seq=seq)
svc.close()
print(start, time.monotonic(), svc.stats().dropped, flush=True)
"""


def env_for(db: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env["AUDIT_DB_PATH"] = str(db)
    return env


def one_kill(folder: Path, rate: float, seconds: float) -> tuple[int, float, int]:
    """(missing entries among those reported, accepted rate, reported) for one kill."""
    db = folder / "kill.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    script = folder / "kill_child.py"
    script.write_text(textwrap.dedent(KILL_CHILD))
    errors = folder / "kill_child.err"
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(rate)],
            env=env_for(db),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    first: tuple[int, float] | None = None
    seq, when = 0, 0.0
    for line in proc.stdout:
        seq_text, when_text = line.split()
        seq, when = int(seq_text), float(when_text)
        if first is None:
            first = (seq, when)
        elif when - first[1] >= seconds:
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    if first is None or proc.returncode != -signal.SIGKILL:
        raise SystemExit(f"the child failed ({proc.returncode}):\n{errors.read_text()[-3000:]}")
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = conn.execute(
            "SELECT count(*) FROM audit_logs WHERE json_extract(parameters, '$.seq') <= ?",
            (seq,),
        ).fetchone()[0]
    finally:
        conn.close()
    return seq - stored, (seq - first[0]) / (when - first[1]), seq


def kill_table(folder: Path, kills: int) -> str:
    lines = [
        "| load (default settings) | kills | accepted calls/s | missing entries "
        "(median / max) | time span of the missing (median / max) |",
        "|---|---|---|---|---|",
    ]
    for label, rate in (
        ("paced, 1,000 calls/s", 1_000.0),
        ("paced, 20,000 calls/s", 20_000.0),
        ("flat out, one thread", 0.0),
    ):
        runs = [one_kill(folder, rate, seconds=1.0) for _ in range(kills)]
        missing = [m for m, _, _ in runs]
        spans = [m / r * 1000 for m, r, _ in runs]
        rates = statistics.median(r for _, r, _ in runs)
        lines.append(
            f"| {label} | {kills} | {rates:,.0f} | {statistics.median(missing):,.0f} / "
            f"{max(missing):,} | {statistics.median(spans):,.0f} ms / {max(spans):,.0f} ms |"
        )
    return "\n".join(lines)


def throughput(folder: Path, processes: int, calls: int) -> tuple[float, int, int]:
    """(total rows/s, rows on disk, entries the children reported as dropped)."""
    db = folder / f"shared-{processes}.db"
    script = folder / "writer_child.py"
    script.write_text(textwrap.dedent(WRITER_CHILD))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(w), str(calls)],
            env=env_for(db),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # drop warnings are counted below instead
            text=True,
        )
        for w in range(processes)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    spans = []
    dropped = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0
        start, end, lost = out.split()
        spans.append((float(start), float(end)))
        dropped += int(lost)
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT count(*) FROM audit_logs WHERE tool_name = 'record_usage'"
        ).fetchone()[0]
    finally:
        conn.close()
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return rows / wall, rows, dropped


def throughput_table(folder: Path, calls: int) -> str:
    lines = [
        "| processes on one file | calls each | rows on disk | dropped "
        "| total rows/s (first start to last close) |",
        "|---|---|---|---|---|",
    ]
    for n in (1, 2, 4):
        rate, rows, dropped = throughput(folder, n, calls)
        assert rows + dropped == n * calls, (rows, dropped, n * calls)
        lines.append(f"| {n} | {calls:,} | {rows:,} | {dropped:,} | {rate:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(
            f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs\n"
        )
        print("### SIGKILL loss window\n")
        print(kill_table(folder, args.kills))
        print("\n### Several processes writing to one file\n")
        print(throughput_table(folder, args.calls))


if __name__ == "__main__":
    main()
