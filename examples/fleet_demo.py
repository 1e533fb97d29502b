"""A fleet in one command: a throw-away PostgreSQL, three audited replicas, one trail.

    python examples/fleet_demo.py            # about 10 s; everything is removed afterwards
    python examples/fleet_demo.py --keep     # leave the server running for the CLI

What it does, as a fleet would in production:

1. starts a private PostgreSQL server (``initdb`` + ``pg_ctl`` into a temporary
   folder, loopback only; the Debian/Ubuntu ``postgresql`` package suffices);
2. runs three replica processes of a small FinOps tag-compliance service. Each
   is configured only by environment variables: ``AUDIT_DB_URL`` (the central
   store), ``AUDIT_DB_PATH`` (its own local buffer) and ``AUDIT_REPLICA_ID``.
   Its tools are plain ``@audit_tool`` / ``@audit_tool_sync`` functions: the
   tools write to the local buffer in microseconds and a background forwarder
   ships the rows to PostgreSQL; ``forward()`` before exit waits for that;
3. queries the fleet's trail through ``AuditService(db_url=...)``: calls per
   replica, per-tool latency percentiles computed in PostgreSQL, the most
   frequent errors, and ``verify()`` of every replica's hash chain.

With ``--keep`` the server and the buffers stay; the script prints the
``AUDIT_DB_URL`` to use with the ``finops-audit`` CLI and how to remove them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPLICAS = ("eu-west-1", "us-east-1", "ap-southeast-2")


# ---------------------------------------------------------------------- one replica


def replica_main(calls: int) -> None:
    """A replica: configured by AUDIT_* variables only, as a deployed server would be."""
    from finops_audit import audit_tool, audit_tool_sync, get_default_service

    replica_id = os.environ["AUDIT_REPLICA_ID"]
    rng = random.Random(replica_id)
    required = ("CostCenter", "Owner", "Environment")

    @audit_tool
    async def check_tag_compliance(resource_type: str, region: str) -> dict[str, Any]:
        """Share of resources of a type carrying every required tag."""
        await asyncio.sleep(rng.random() / 2000)  # stands in for a cloud inventory call
        total = 40
        compliant = sum(rng.random() > 0.2 for _ in range(total))
        return {"type": resource_type, "region": region, "compliant": compliant, "total": total}

    @audit_tool
    async def find_untagged_resources(region: str, tag_key: str = "Owner") -> list[str]:
        """Resources missing ``tag_key``; the inventory API throttles now and then."""
        await asyncio.sleep(rng.random() / 1000)
        if rng.random() < 0.03:
            raise RuntimeError("Rate exceeded (ThrottlingException)")
        return [f"i-{region}-{n:04d}" for n in range(rng.randrange(5))]

    @audit_tool_sync
    def estimate_untagged_cost(account_id: str, monthly_spend_usd: float) -> float:
        """Monthly spend that no cost centre can be charged for."""
        if not (len(account_id) == 12 and account_id.isdigit()):
            raise ValueError(f"account_id must be 12 digits, got {account_id!r}")
        return round(monthly_spend_usd * 0.17, 2)

    @audit_tool_sync
    def get_tag_policy(policy_name: str = "default") -> dict[str, Any]:
        """The tag policy resources are checked against."""
        if policy_name != "default":
            raise LookupError(f"no tag policy named {policy_name!r}")
        return {"name": policy_name, "required": list(required)}

    async def one() -> None:
        pick = rng.random()
        try:
            if pick < 0.4:
                await check_tag_compliance(
                    resource_type=rng.choice(("ec2:instance", "s3:bucket", "rds:db")),
                    region=replica_id,
                )
            elif pick < 0.7:
                await find_untagged_resources(region=replica_id)
            elif pick < 0.9:
                account = f"{rng.randrange(10**12):012d}" if rng.random() > 0.05 else "12345"
                estimate_untagged_cost(account_id=account, monthly_spend_usd=12_500.0)
            else:
                get_tag_policy(policy_name="default" if rng.random() > 0.1 else "legacy")
        except Exception:
            pass  # a failed call is in the trail: that is what it is for

    async def serve() -> None:
        for start in range(0, calls, 20):  # twenty concurrent requests at a time
            await asyncio.gather(*(one() for _ in range(min(20, calls - start))))

    began = time.monotonic()
    asyncio.run(serve())
    service = get_default_service()  # the one the bare decorators used
    service.forward(timeout=60)  # everything this replica recorded is now central
    stats = service.stats()
    service.close()
    print(
        json.dumps(
            {
                "replica": replica_id,
                "calls": stats.accepted,
                "seconds": round(time.monotonic() - began, 2),
                "lag": stats.forward_lag_entries,
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------------- the fleet


def run_replicas(url: str, folder: Path, calls: int) -> list[dict[str, Any]]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUDIT_")}
    procs = []
    for region in REPLICAS:
        env = {
            **base,
            "AUDIT_DB_URL": url,
            "AUDIT_DB_PATH": str(folder / f"{region}.db"),
            "AUDIT_REPLICA_ID": region,
        }
        cmd = [sys.executable, __file__, "--replica", "--calls", str(calls)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"a replica failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def show_fleet(url: str, folder: Path, replicas: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from finops_audit import AuditService

    console = Console()
    # A reader: its own (never written) buffer file; every query reads PostgreSQL.
    with AuditService(db_path=folder / "reader.db", db_url=url) as fleet:
        per_replica = Counter(entry.replica_id for entry in fleet.iter_logs())
        failures = Counter(entry.replica_id for entry in fleet.iter_logs(status="FAILURE"))
        tools = fleet.tool_stats()
        errors = fleet.error_groups(limit=5)
        report = fleet.verify()

    table = Table(title="Replicas (read back from PostgreSQL)")
    for name in ("replica", "calls made", "in the central trail", "failures", "run time"):
        table.add_column(name, justify="left" if name == "replica" else "right")
    for r in replicas:
        table.add_row(
            r["replica"],
            f"{r['calls']:,}",
            f"{per_replica[r['replica']]:,}",
            f"{failures[r['replica']]:,}",
            f"{r['seconds']:.1f} s",
        )
    console.print(table)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    table = Table(title="tool_stats(): latency percentiles computed in PostgreSQL (ms)")
    for name in ("tool", "calls", "failure rate", "p50", "p95", "p99", "max"):
        table.add_column(name, justify="left" if name == "tool" else "right")
    for t in tools:
        table.add_row(
            t.tool_name,
            f"{t.calls:,}",
            f"{t.failure_rate:.1%}",
            ms(t.p50_ms),
            ms(t.p95_ms),
            ms(t.p99_ms),
            ms(t.max_ms),
        )
    console.print(table)

    table = Table(title="error_groups(): what failed, fleet-wide")
    for name in ("tool", "error", "count"):
        table.add_column(name, justify="right" if name == "count" else "left")
    for g in errors:
        table.add_row(g.tool_name, g.error_message, f"{g.count:,}")
    console.print(table)

    verdict = "[green]intact[/]" if report.ok else f"[red]BROKEN[/]: {report.problem}"
    console.print(
        f"verify(): every replica's hash chain is {verdict} "
        f"({report.rows_checked:,} rows checked, {len(per_replica)} replicas)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per replica")
    parser.add_argument("--keep", action="store_true", help="leave the server running")
    parser.add_argument("--replica", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replica:
        replica_main(args.calls)
        return

    from finops_audit._pgserver import temporary_postgres

    folder = Path(tempfile.mkdtemp(prefix="finops-fleet-"))
    stack = contextlib.ExitStack()
    with stack:
        print("starting a throw-away PostgreSQL server ...", flush=True)
        server = stack.enter_context(temporary_postgres())
        print(f"running {len(REPLICAS)} replicas, {args.calls:,} calls each ...", flush=True)
        replicas = run_replicas(server.dsn, folder, args.calls)
        show_fleet(server.dsn, folder, replicas)
        if args.keep:
            keep(server, folder)
    shutil.rmtree(folder, ignore_errors=True)


def keep(server: Any, folder: Path) -> None:
    """Print how to use and remove what stays, then leave without cleaning up."""
    as_owner = "runuser -u postgres -- " if os.geteuid() == 0 else ""
    print(
        f"\nThe server is still running. Query the fleet with the CLI:\n"
        f"  export AUDIT_DB_URL={server.dsn} AUDIT_DB_PATH={folder / 'cli.db'}\n"
        f"  finops-audit stats\n"
        f"  finops-audit logs --status failure --limit 20\n"
        f"  finops-audit verify\n"
        f"Replica buffers: {folder}\n"
        f"Remove everything afterwards:\n"
        f"  {as_owner}{server.bin_dir / 'pg_ctl'} -D {server.data} -m fast stop\n"
        f"  rm -rf {server.root} {folder}",
        flush=True,
    )
    # temporary_postgres() removes the server when its context ends, at the latest
    # when the interpreter finalises it: leave without running any clean-up.
    os._exit(0)


if __name__ == "__main__":
    main()
