"""``finops-audit``: a thin shell over :class:`~finops_audit.AuditService`.

Every command takes ``--db`` (default: ``AUDIT_DB_PATH``, then ``audit_logs.db``)
and the same ``AUDIT_*`` settings as the library. User mistakes (a bad filter,
a missing database) print one clear line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .exceptions import AuditError
from .models import AuditLogEntry, AuditStatus
from .service import MAX_LIMIT, AuditService

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _db_option(fn: F) -> F:
    return click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="SQLite file of the trail (default: $AUDIT_DB_PATH, then audit_logs.db).",
    )(fn)


def _user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AuditError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _open_existing(db_path: Path | None) -> AuditService:
    service = AuditService(db_path=db_path)
    if not service.db_path.exists():
        service.close()
        raise click.ClickException(
            f"no audit database at {service.db_path} (set --db or AUDIT_DB_PATH)"
        )
    return service


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="finops-audit")
def main() -> None:
    """Audit trail of MCP tool calls: run the demo, read the logs."""


@main.command()
@_db_option
@click.option("--calls", default=20_000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option(
    "--concurrency",
    default=32,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Tool calls in flight at once.",
)
@_user_errors
def demo(db_path: Path | None, calls: int, concurrency: int) -> None:
    """Drive audited FinOps tools (async and sync, some failing) and show what was recorded."""
    from ._demo import run_demo

    console = Console()
    with AuditService(db_path=db_path) as service:
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        with Progress(
            TextColumn("[bold]auditing tool calls"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("calls", total=calls)
            asyncio.run(run_demo(service, calls, concurrency, lambda n: progress.advance(task, n)))
        elapsed = time.perf_counter() - t0
        entries = _all_since(service, started)
        stats = service.stats()
    _print_summary(console, entries, elapsed, service.db_path, stats.dropped)


def _all_since(service: AuditService, since: datetime) -> list[AuditLogEntry]:
    out: list[AuditLogEntry] = []
    while True:
        page = service.get_logs(since=since, limit=MAX_LIMIT, offset=len(out))
        out.extend(page)
        if len(page) < MAX_LIMIT:
            return out


def _print_summary(
    console: Console, entries: list[AuditLogEntry], elapsed: float, db: Path, dropped: int
) -> None:
    failures = sum(e.status is AuditStatus.FAILURE for e in entries)
    console.print(
        f"Recorded [bold]{len(entries):,}[/] calls ([red]{failures:,} failed[/]) in "
        f"{elapsed:.2f} s ({len(entries) / elapsed:,.0f} calls/s), {dropped} dropped, "
        f"in [cyan]{db}[/]"
    )
    by_tool: dict[str, list[AuditLogEntry]] = defaultdict(list)
    for entry in entries:
        by_tool[entry.tool_name].append(entry)
    table = Table(title="Per-tool latency (ms, from the audit trail)")
    for column in ("tool", "calls", "failures", "p50", "p95", "max"):
        table.add_column(column, justify="left" if column == "tool" else "right")
    for tool, rows in sorted(by_tool.items(), key=lambda kv: -len(kv[1])):
        times = sorted(e.execution_time_ms or 0.0 for e in rows)
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        table.add_row(
            tool,
            f"{len(rows):,}",
            f"{sum(e.status is AuditStatus.FAILURE for e in rows):,}",
            f"{statistics.median(times):.3f}",
            f"{p95:.3f}",
            f"{times[-1]:.3f}",
        )
    console.print(table)
    errors: dict[str, int] = defaultdict(int)
    for entry in entries:
        if entry.error_message:
            errors[entry.error_message] += 1
    if errors:
        err_table = Table(title="Most frequent failures")
        err_table.add_column("error")
        err_table.add_column("count", justify="right")
        for message, count in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
            err_table.add_row(message, f"{count:,}")
        console.print(err_table)


@main.command()
@_db_option
@click.option("--tool", "tool_name", default=None, help="Only this tool name.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in AuditStatus], case_sensitive=False),
    default=None,
)
@click.option("--since", default=None, help="ISO-8601 start (inclusive), e.g. 2026-11-28T00:00Z.")
@click.option("--until", default=None, help="ISO-8601 end (inclusive).")
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--offset", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_user_errors
def logs(
    db_path: Path | None,
    tool_name: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List recent entries, newest first, with the get_logs filters."""
    with _open_existing(db_path) as service:
        entries = service.get_logs(
            tool_name=tool_name,
            status=status,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry.model_dump(mode="json"), ensure_ascii=False))
        return
    table = Table(title=f"{len(entries)} audit entries")
    for column in ("id", "timestamp (UTC)", "tool", "status", "ms", "parameters", "error"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            str(e.id),
            e.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            e.tool_name,
            "[green]SUCCESS[/]" if e.status is AuditStatus.SUCCESS else "[red]FAILURE[/]",
            f"{e.execution_time_ms:.3f}" if e.execution_time_ms is not None else "",
            json.dumps(e.parameters, ensure_ascii=False)[:120],
            e.error_message or "",
        )
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
