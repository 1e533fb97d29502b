"""``finops-audit``: a thin shell over :class:`~finops_audit.AuditService`.

Every command takes ``--db`` (default: ``AUDIT_DB_PATH``, then ``audit_logs.db``)
and the same ``AUDIT_*`` settings as the library. User mistakes (a bad filter,
a missing database) print one clear line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._durations import parse_duration
from .analytics import ErrorGroup, ToolStats
from .config import load_settings
from .exceptions import AuditError, AuditTimeoutError
from .models import AuditLogEntry, AuditStatus
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
        except (AuditError, OSError, sqlite3.Error) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _open_existing(db_path: Path | None, *, buffer: bool = False) -> AuditService:
    """A service on an existing trail; ``buffer``: the local file itself must exist
    and have somewhere to go (``finops-audit forward``)."""
    # Operator commands never purge (retention) nor take over the host's signals.
    settings = load_settings(db_path=db_path).model_copy(
        update={"retention_days": None, "handle_signals": False}
    )
    if buffer and settings.db_url is None and settings.otlp_endpoint is None:
        raise click.ClickException("nothing to forward to: set AUDIT_DB_URL or AUDIT_OTLP_ENDPOINT")
    # With AUDIT_DB_URL every reading command reads the fleet's central trail.
    if (buffer or settings.db_url is None) and not Path(settings.db_path).exists():
        what = "audit buffer" if buffer else "audit database"
        raise click.ClickException(f"no {what} at {settings.db_path} (set --db or AUDIT_DB_PATH)")
    return AuditService(settings=settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="finops-audit")
def main() -> None:
    """Audit trail of MCP tool calls: demo, logs, tail, stats, export, purge, backup, verify,
    forward.

    With AUDIT_DB_URL set, every command reads the fleet's central PostgreSQL trail.
    """


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


def _filters(fn: F) -> F:
    """The get_logs filters, shared by logs, tail, export and stats."""
    options = [
        click.option("--tool", "tool_name", default=None, help="Only this tool name."),
        click.option(
            "--status",
            type=click.Choice([s.value for s in AuditStatus], case_sensitive=False),
            default=None,
        ),
        click.option(
            "--since",
            default=None,
            help="Start (inclusive): ISO-8601 (2026-11-28T00:00Z) or an age (24h, 7d).",
        ),
        click.option("--until", default=None, help="End (inclusive): ISO-8601 or an age."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _when(value: str | None, name: str) -> str | datetime | None:
    """ISO-8601 as is; an age such as ``24h`` becomes now minus that."""
    if value is None:
        return None
    text = value.strip()
    if text and text[-1].lower() in "smhdw" and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(timezone.utc) - parse_duration(text, name=name)
    return text


def _filter_args(
    tool_name: str | None, status: str | None, since: str | None, until: str | None
) -> dict[str, Any]:
    """The ``_filters`` options as ``get_logs`` keyword arguments (ages resolved)."""
    return {
        "tool_name": tool_name,
        "status": status,
        "since": _when(since, "since"),
        "until": _when(until, "until"),
    }


def _entry_row(e: AuditLogEntry) -> dict[str, Any]:
    return e.model_dump(mode="json")


_CSV_FIELDS = list(AuditLogEntry.model_fields)


def _csv_row(e: AuditLogEntry) -> dict[str, Any]:
    row = _entry_row(e)
    row["parameters"] = json.dumps(row["parameters"], ensure_ascii=False)
    row["labels"] = json.dumps(row["labels"], ensure_ascii=False) if row["labels"] else ""
    return row


@main.command()
@_db_option
@_filters
@click.option(
    "--value",
    "parameter_value",
    default=None,
    help="Only entries whose parameters contain this value (or its HMAC pseudonym).",
)
@click.option("--user", default=None, help="Only calls made by this user (audit_context).")
@click.option("--client", "client_name", default=None, help="Only calls from this MCP client.")
@click.option("--session", "session_id", default=None, help="Only this MCP session.")
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--offset", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
@_user_errors
def logs(
    db_path: Path | None,
    tool_name: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    parameter_value: str | None,
    user: str | None,
    client_name: str | None,
    session_id: str | None,
    limit: int,
    offset: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """List recent entries, newest first, with the get_logs filters."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    with _open_existing(db_path) as service:
        entries = service.get_logs(
            **_filter_args(tool_name, status, since, until),
            limit=limit,
            offset=offset,
            parameter_value=parameter_value,
            user=user,
            client_name=client_name,
            session_id=session_id,
        )
    if as_json:
        for entry in entries:
            click.echo(json.dumps(_entry_row(entry), ensure_ascii=False))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_csv_row(e) for e in entries)
    else:
        Console().print(_logs_table(entries, f"{len(entries)} audit entries, newest first"))


def _slow_table(entries: list[AuditLogEntry]) -> Table:
    table = Table(title=f"The {len(entries)} slowest calls")
    for column in ("ms", "tool", "time (UTC)", "status", "id"):
        table.add_column(
            column, no_wrap=True, justify="right" if column in ("ms", "id") else "left"
        )
    for e in entries:
        table.add_row(
            f"{e.execution_time_ms:.3f}" if e.execution_time_ms is not None else "",
            e.tool_name,
            e.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            e.status.value,
            str(e.id),
        )
    return table


def _logs_table(entries: list[AuditLogEntry], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "time (UTC)", "tool", "status", "ms", "client"):
        table.add_column(
            column, no_wrap=True, justify="right" if column in ("id", "ms") else "left"
        )
    table.add_column("parameters", overflow="fold", ratio=3)
    table.add_column("error", overflow="fold", ratio=2)
    for e in entries:
        client = "/".join(x for x in (e.client_name, e.client_version) if x) or e.user or ""
        table.add_row(
            str(e.id),
            e.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            e.tool_name,
            "[green]SUCCESS[/]" if e.status is AuditStatus.SUCCESS else "[red]FAILURE[/]",
            f"{e.execution_time_ms:.3f}" if e.execution_time_ms is not None else "",
            client,
            json.dumps(e.parameters, ensure_ascii=False)[:300],
            e.error_message or "",
        )
    return table


@main.command()
@_db_option
@_filters
@click.option(
    "-n",
    "--lines",
    default=10,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help="Entries to show first.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries as they arrive.")
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="Seconds between polls with --follow.",
)
@click.option(
    "--exit-after",
    default=None,
    type=click.FloatRange(0, None),
    help="Stop following after this many seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_user_errors
def tail(
    db_path: Path | None,
    tool_name: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    lines: int,
    follow: bool,
    interval: float,
    exit_after: float | None,
    as_json: bool,
) -> None:
    """Show the latest entries (oldest of them first); -f follows new ones live."""
    console = Console()

    def show(entry: AuditLogEntry) -> None:
        if as_json:
            click.echo(json.dumps(_entry_row(entry), ensure_ascii=False))
            return
        mark = "[green]OK  [/]" if entry.status is AuditStatus.SUCCESS else "[red]FAIL[/]"
        ms = f"{entry.execution_time_ms:9.3f} ms" if entry.execution_time_ms is not None else ""
        args = json.dumps(entry.parameters, ensure_ascii=False)[:160]
        error = f"  [red]{entry.error_message}[/]" if entry.error_message else ""
        console.print(
            f"{entry.id:>8} {entry.timestamp:%Y-%m-%d %H:%M:%S.%f} {mark} "
            f"[bold]{entry.tool_name}[/] {ms} {args}{error}",
            highlight=False,
            markup=True,
            soft_wrap=True,
        )

    filters = _filter_args(tool_name, status, since, until)
    with _open_existing(db_path) as service:
        last_id = 0
        if lines:
            latest = service.get_logs(limit=lines, **filters)
            for entry in reversed(latest):
                show(entry)
            last_id = max((e.id for e in latest), default=0)
        if not lines or not follow:
            last_id = max(last_id, _max_id(service))
        if not follow:
            return
        deadline = None if exit_after is None else time.monotonic() + exit_after
        try:
            while deadline is None or time.monotonic() < deadline:
                for entry in service.iter_logs(page_size=1000, **filters):
                    if entry.id > last_id:
                        show(entry)
                        last_id = entry.id
                time.sleep(interval)
        except KeyboardInterrupt:
            return


def _max_id(service: AuditService) -> int:
    newest = service.get_logs(limit=1)
    return newest[0].id if newest else 0


@main.command()
@_db_option
@click.option("--tool", "tool_name", default=None, help="Only this tool name.")
@click.option("--since", default="24h", show_default=True, help="ISO-8601 or an age (24h, 7d).")
@click.option("--until", default=None, help="ISO-8601 or an age.")
@click.option("--bucket", default="1h", show_default=True, help="Time bucket for calls over time.")
@click.option(
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Rows in the slowest-calls and errors tables.",
)
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON document.")
@_user_errors
def stats(
    db_path: Path | None,
    tool_name: str | None,
    since: str | None,
    until: str | None,
    bucket: str,
    top: int,
    as_json: bool,
) -> None:
    """Per-tool usage, failures and latency percentiles; slowest calls; errors; calls over time."""
    window: dict[str, Any] = {
        "tool_name": tool_name,
        "since": _when(since, "since"),
        "until": _when(until, "until"),
    }
    with _open_existing(db_path) as service:
        tools = service.tool_stats(**window)
        slow = service.slowest_calls(limit=top, **window)
        errors = service.error_groups(limit=top, **window)
        buckets = service.calls_over_time(bucket=bucket, **window)
    if as_json:
        doc = {
            "tools": [t.model_dump(mode="json") for t in tools],
            "slowest_calls": [_entry_row(e) for e in slow],
            "errors": [g.model_dump(mode="json") for g in errors],
            "calls_over_time": [b.model_dump(mode="json") for b in buckets],
        }
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    console = Console()
    if not tools:
        console.print("No calls in this window.")
        return
    console.print(_tool_table(tools))
    console.print(_slow_table(slow))
    if errors:
        console.print(_error_table(errors))
    table = Table(title=f"Calls per {bucket}")
    for column in ("start (UTC)", "calls", "failures"):
        table.add_column(column, justify="left" if column.startswith("start") else "right")
    for b in buckets:
        table.add_row(f"{b.start:%Y-%m-%d %H:%M}", f"{b.calls:,}", f"{b.failures:,}")
    console.print(table)


@main.command()
@_db_option
@_filters
@click.argument("output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default=None,
    help="Default: from the file name (.csv), else jsonl.",
)
@_user_errors
def export(
    db_path: Path | None,
    tool_name: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    output: Path,
    fmt: str | None,
) -> None:
    """Export entries oldest first to JSONL or CSV (OUTPUT '-' is stdout), in bounded memory."""
    fmt = fmt or ("csv" if output.suffix.lower() == ".csv" else "jsonl")
    filters = _filter_args(tool_name, status, since, until)
    to_stdout = str(output) == "-"
    with _open_existing(db_path) as service:
        total = service.count(**filters)
        if to_stdout:
            written = service.export(sys.stdout, fmt, **filters)
            return
        progress = Progress(
            TextColumn("[bold]exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        fd = os.open(output, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream, progress:
            task = progress.add_task("rows", total=total)
            written = service.export(
                stream, fmt, progress=lambda n: progress.advance(task, n), **filters
            )
    os.chmod(output, 0o600)
    click.echo(f"exported {written:,} entries to {output} ({fmt})", err=True)


@main.command()
@_db_option
@click.option("--older-than", required=True, help="Age of entries to delete, e.g. 90d, 12h.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_user_errors
def purge(db_path: Path | None, older_than: str, yes: bool) -> None:
    """Delete entries older than --older-than, in small batches, leaving a signed checkpoint."""
    age = parse_duration(older_than, name="--older-than")
    with _open_existing(db_path) as service:
        if not yes:
            click.confirm(
                f"Delete audit entries older than {age} from {service.trail}?", abort=True
            )
        report = service.purge(age)
    click.echo(
        f"purged {report.rows_deleted:,} entries in {report.batches} batches"
        + (f" (through id {report.through_id})" if report.through_id is not None else "")
    )


@main.command()
@_db_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@_user_errors
def backup(db_path: Path | None, dest: Path) -> None:
    """Write an online, consistent copy of the trail to DEST (mode 0600) while writers run."""
    with _open_existing(db_path) as service:
        report = service.backup(dest)
    click.echo(f"backed up {report.rows:,} entries ({report.bytes:,} bytes) to {report.path}")


@main.command()
@_db_option
@click.option("--json", "as_json", is_flag=True)
@_user_errors
def verify(db_path: Path | None, as_json: bool) -> None:
    """Check the hash chain; exit status 1 at the first modified, missing or moved row."""
    with _open_existing(db_path) as service:
        report = service.verify()
    if as_json:
        click.echo(report.model_dump_json())
    elif report.ok:
        extra = f", {report.legacy_rows} from before the chain" if report.legacy_rows else ""
        since = (
            f", after a purge through id {report.checkpoint_through_id}"
            if report.checkpoint_through_id is not None
            else ""
        )
        click.echo(
            f"OK: {report.rows_checked:,} entries verified{extra}{since}"
            + (" (keyed)" if report.keyed else "")
        )
    else:
        click.echo(
            f"TAMPERED at id {report.first_bad_id}: {report.problem} "
            f"({report.rows_checked:,} entries verified before it)",
            err=True,
        )
    if not report.ok:
        sys.exit(1)


@main.command()
@_db_option
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0, 86_400),
    help="Seconds to wait for the buffer to be delivered.",
)
@_user_errors
def forward(db_path: Path | None, timeout: float) -> None:
    """Deliver a buffer's waiting entries to AUDIT_DB_URL / AUDIT_OTLP_ENDPOINT now.

    For a replica that stopped with a backlog (its buffer file is here): exits 0
    once everything is delivered, 1 with the lag and the last error otherwise.
    """
    with _open_existing(db_path, buffer=True) as service:
        try:
            service.forward(timeout=timeout)
        except AuditTimeoutError as exc:
            click.echo(f"not delivered: {exc}", err=True)
            sys.exit(1)
        stats = service.stats()
    for name, sink in stats.forwarding.items():
        click.echo(
            f"{name}: {sink.forwarded:,} entries delivered to {sink.target}; "
            f"buffer {service.db_path} is up to date (cursor {sink.cursor:,})"
        )


if __name__ == "__main__":  # pragma: no cover
    main()
