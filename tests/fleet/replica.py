"""One replica of an audited service, run as a subprocess by the fleet tests and benchmarks.

``python tests/fleet/replica.py --db BUFFER [--url postgresql://...] --calls N --rate R``
makes ``N`` audited calls (a sync tool and an async tool in turn, every
``--fail-every``-th call raising), optionally waits for forwarding, closes the
service and prints a JSON summary. Every line on stdout is one JSON object
with an ``event`` key, so the parent can follow the phases:

* ``ready``: the service is built; with ``--wait-go`` the replica then waits
  for a line on stdin before calling (benchmarks time from here);
* ``sent``: with ``--pause-after-send S``, each batch the PostgreSQL sink
  delivered, before the forwarder moves its cursor (the replica then sleeps
  ``S`` seconds in that window, where a SIGKILL is the hardest case);
* ``probe``: with ``--probe``, after the calls: what ``forward(timeout=1)``
  did and ``stats().forward_last_error``; then it waits for a line on stdin;
* ``summary``: the last line: counts, errors, ``stats()`` after forwarding
  and after ``close()``, how long ``close()`` took, and (``--sample-leader``) when this process
  held the buffer's forwarding lease.

Nothing here is private API except the sink class patched for fault injection.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from finops_audit import AuditService, audit_tool, audit_tool_sync
from finops_audit.exceptions import AuditTimeoutError


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="the replica's SQLite buffer")
    p.add_argument("--url", default="", help="central PostgreSQL; empty: no forwarding")
    p.add_argument("--replica-id", default=None)
    p.add_argument("--calls", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.0, help="calls per second; 0: flat out")
    p.add_argument("--fail-every", type=int, default=50, help="every k-th call raises")
    p.add_argument("--batch", type=int, default=None, help="forward_batch_size")
    p.add_argument("--max-rate", type=float, default=None, help="forward_max_rate")
    p.add_argument("--forward-timeout", type=float, default=None, help="close() forwarding")
    p.add_argument("--forward-wait", type=float, default=0.0, help="forward(timeout) at the end")
    p.add_argument("--probe", action="store_true", help="probe an unreachable central store")
    p.add_argument("--wait-go", action="store_true", help="wait for stdin before calling")
    p.add_argument("--pause-after-send", type=float, default=0.0)
    p.add_argument("--sample-leader", action="store_true")
    return p.parse_args(argv)


def inject_pause_after_send(seconds: float) -> None:
    """Widen the window between a committed central batch and the cursor update."""
    from finops_audit.forwarding import postgres

    original = postgres.PostgresSink.send

    def send(self: Any, replica: Any, rows: Any, prev_hash: str) -> None:
        original(self, replica, rows, prev_hash)
        emit("sent", first=rows[0].seq, last=rows[-1].seq)
        time.sleep(seconds)

    postgres.PostgresSink.send = send  # type: ignore[method-assign]


class LeaderSampler:
    """Samples ``stats().forwarding['postgres'].leader`` every few milliseconds.

    Intervals run from the first to the last ``True`` sample of each run: the
    flag is cleared before the lease is released, so two processes' intervals
    can only overlap if both really held the lease at once.
    """

    def __init__(self, svc: AuditService) -> None:
        self._svc = svc
        self.intervals: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        current: list[float] | None = None
        while not self._stop.is_set():
            now = time.time()
            fwd = self._svc.stats().forwarding.get("postgres")
            if fwd is not None and fwd.leader:
                if current is None:
                    current = [now, now]
                    self.intervals.append(current)
                current[1] = now
            else:
                current = None
            self._stop.wait(0.003)

    def stop(self) -> list[list[float]]:
        self._stop.set()
        self._thread.join()
        return self.intervals


async def make_calls(svc: AuditService, args: argparse.Namespace) -> dict[str, int]:
    replica = args.replica_id or "shared"
    fail_every = args.fail_every

    def body(seq: int) -> int:
        if fail_every and seq % fail_every == 0:
            raise ValueError(f"call {seq} rejected")
        return seq * 2

    @audit_tool_sync(service=svc)
    def record_usage(seq: int, replica: str) -> int:
        return body(seq)

    @audit_tool(service=svc)
    async def check_usage(seq: int, replica: str) -> int:
        return body(seq)

    ok = failed = wrong = 0
    t0 = time.monotonic()
    for seq in range(1, args.calls + 1):
        try:
            if seq % 2:
                result = record_usage(seq=seq, replica=replica)
            else:
                result = await check_usage(seq=seq, replica=replica)
        except ValueError:
            failed += 1
        else:
            if result == seq * 2:
                ok += 1
            else:
                wrong += 1
        if args.rate and seq % 10 == 0:
            ahead = t0 + seq / args.rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    return {"ok": ok, "failed": failed, "wrong": wrong}


def stats_dict(svc: AuditService) -> dict[str, Any]:
    return dataclasses.asdict(svc.stats())


def probe(svc: AuditService) -> None:
    """The central store is unreachable: forward() must time out, stats() must say why."""
    svc.flush()
    outcome = "returned"
    try:
        svc.forward(timeout=1)
    except AuditTimeoutError as exc:
        outcome = f"AuditTimeoutError: {exc}"
    deadline = time.monotonic() + 20
    while svc.stats().forward_last_error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    emit("probe", forward=outcome, stats=stats_dict(svc))
    sys.stdin.readline()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    if args.pause_after_send:
        inject_pause_after_send(args.pause_after_send)
    svc = AuditService(
        db_path=args.db,
        db_url=args.url or None,
        replica_id=args.replica_id,
        forward_batch_size=args.batch,
        forward_max_rate=args.max_rate,
        forward_timeout=args.forward_timeout,
    )
    emit("ready")
    if args.wait_go:
        sys.stdin.readline()
    sampler = LeaderSampler(svc) if args.sample_leader else None
    started = time.time()
    calls = asyncio.run(make_calls(svc, args))
    calls_done = time.time()
    if args.probe:
        probe(svc)
    forward_error = None
    if args.forward_wait:
        try:
            svc.forward(timeout=args.forward_wait)
        except AuditTimeoutError as exc:
            forward_error = str(exc)
    forwarded = time.time()
    stats = stats_dict(svc)
    intervals = sampler.stop() if sampler is not None else []
    t = time.monotonic()
    close_error = None
    try:
        svc.close()
    except Exception as exc:
        close_error = f"{type(exc).__name__}: {exc}"
    close_seconds = time.monotonic() - t
    emit(
        "summary",
        replica_id=args.replica_id,
        calls=args.calls,
        **calls,
        forward_error=forward_error,
        stats=stats,
        close_seconds=close_seconds,
        closed_stats=stats_dict(svc),  # the forwarders' counters, final
        close_error=close_error,
        leader_intervals=intervals,
        started=started,
        calls_done=calls_done,
        forwarded=forwarded,
    )


if __name__ == "__main__":
    main()
