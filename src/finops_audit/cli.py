"""``finops-audit``: a thin shell over :class:`~finops_audit.AuditService`.

Every command takes ``--db`` (default: ``AUDIT_DB_PATH``, then ``audit_logs.db``)
and the same ``AUDIT_*`` settings as the library. User mistakes (a bad filter,
a missing database) print one clear line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .analytics import ErrorGroup, ToolStats
from .exceptions import AuditError
from .models import AuditStatus
from .service import AuditService

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
        tools = service.tool_stats(since=started)
        errors = service.error_groups(limit=5, since=started)
        stats = service.stats()
    calls = sum(t.calls for t in tools)
    failures = sum(t.failures for t in tools)
    console.print(
        f"Recorded [bold]{calls:,}[/] calls ([red]{failures:,} failed[/]) in {elapsed:.2f} s "
        f"({calls / elapsed:,.0f} calls/s), {stats.dropped} dropped, in [cyan]{service.db_path}[/]"
    )
    console.print(_tool_table(tools))
    if errors:
        console.print(_error_table(errors))


def _tool_table(tools: list[ToolStats]) -> Table:
    table = Table(title="Per-tool calls and latency (ms), computed in SQL from the trail")
    for column in ("tool", "calls", "failures", "fail %", "p50", "p95", "p99", "max"):
        table.add_column(
            column, justify="left" if column == "tool" else "right", no_wrap=column == "tool"
        )

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    for t in tools:
        table.add_row(
            t.tool_name,
            f"{t.calls:,}",
            f"{t.failures:,}",
            f"{100 * t.failure_rate:.1f}",
            ms(t.p50_ms),
            ms(t.p95_ms),
            ms(t.p99_ms),
            ms(t.max_ms),
        )
    return table


def _error_table(errors: list[ErrorGroup]) -> Table:
    table = Table(title="Most recent failures, grouped by error")
    for column in ("tool", "error", "count", "last seen (UTC)"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for g in errors:
        table.add_row(
            g.tool_name,
            g.error_message or "",
            f"{g.count:,}",
            g.last_seen.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


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
