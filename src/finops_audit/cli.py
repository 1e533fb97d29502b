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
import shlex
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar, cast

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ._atomic import atomic_path
from ._cli_views import (
    ENTRY_COLUMNS,
    Screen,
    bucket_table,
    entry_row,
    error_table,
    slow_table,
    tool_table,
)
from ._durations import format_duration, parse_duration
from .config import load_settings
from .exceptions import AuditError, AuditTimeoutError
from .maintenance import VerifyReport
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
    """User mistakes and unusable files end in one ``Error:`` line (see :func:`_error_text`);
    a reader that went away (``| head``) ends the command quietly (:func:`_closed_pipe`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return result
        except BrokenPipeError:
            _closed_pipe()
        except (AuditError, OSError, sqlite3.Error) as exc:
            text = _error_text(exc, kwargs.get("db_path"), reading=fn.__name__ in _READERS)
            raise click.ClickException(text) from None

    return wrapper  # type: ignore[return-value]


#: Commands that only read the trail: their errors never speak of writing.
_READERS = frozenset({"logs", "tail", "stats", "export", "verify"})


def _error_text(exc: BaseException, db_path: Path | None, *, reading: bool) -> str:
    """The one line a failed command prints: every message names the file it is about.

    The single place that words CLI errors, so that how the trail is opened (read-only
    for readers, through the writer for the rest) can change without changing them.
    ``sqlite3`` says only "file is not a database"; a reader is told what it could not
    read, never that entries "are kept and retried".
    """
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    if reading:
        text = text.replace("cannot write to", "cannot read").replace(
            "; entries are kept and retried", ""
        )
    if isinstance(exc, sqlite3.Error):  # the library's own errors name their file already
        where = _local_file(db_path)
        if where is not None and where not in text:
            text = f"{where}: {text}"
    return text


def _local_file(db_path: Path | None) -> str | None:
    """The SQLite file a command works on, as the user named it or the settings resolve it
    (``None`` when the command reads a central store, whose errors name their host)."""
    if db_path is not None:
        return str(db_path)
    try:
        settings = load_settings()
    except AuditError:
        return None
    return None if settings.db_url is not None else str(settings.db_path)


def _closed_pipe() -> NoReturn:
    """stdout's reader went away (``logs --json | head -1``): stop quietly, as
    ``git log | head`` does, with the status a shell gives a command ended by SIGPIPE.

    stdout is pointed at /dev/null first, so the interpreter's last flush cannot
    fail again and print "Exception ignored ... BrokenPipeError".
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (tests); nothing to flush there
        pass
    sys.exit(_SIGPIPE_STATUS)


#: 128 + SIGPIPE (13): the status a shell reports for ``git log | head``.
_SIGPIPE_STATUS = 141


class _ChunkedWriter:
    """A text stream that hands ``stream`` at most 64 KiB at a time.

    ``export -`` writes a whole page in one call; CPython can end such a write to a pipe
    whose reader has left half-way without raising BrokenPipeError (the rest is
    dropped and the command exits 0). Smaller writes always report the closed pipe.
    """

    _CHUNK = 65536

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        for start in range(0, len(text), self._CHUNK):
            self._stream.write(text[start : start + self._CHUNK])
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _open_existing(
    db_path: Path | None, *, buffer: bool = False, write: bool = False
) -> AuditService:
    """A service on an existing trail; ``buffer``: the local file itself must exist
    and have somewhere to go (``finops-audit forward``).

    Reading commands get a read-only service: the file is opened ``mode=ro``,
    never created, migrated, switched to WAL or written, and a file that is not
    a trail this version reads is one error line. Commands that write
    (``write``: purge; ``buffer``: forward) check that first, the same way.
    """
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
    if not (write or buffer):
        return AuditService(settings=settings, read_only=True)
    if settings.db_url is None or buffer:
        local = settings.model_copy(update={"db_url": None, "otlp_endpoint": None})
        with AuditService(settings=local, read_only=True) as probe:
            probe.get_logs(limit=1)  # not a trail, or a newer one: an error, nothing written
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

    screen = Screen()
    # The progress bar is for a person watching: on stderr, and only on a terminal.
    status = Console(stderr=True)
    with AuditService(db_path=db_path) as service:
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        with Progress(
            TextColumn("[bold]auditing tool calls"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=status,
            transient=False,
            disable=not status.is_terminal,
        ) as progress:
            task = progress.add_task("calls", total=calls)
            asyncio.run(run_demo(service, calls, concurrency, lambda n: progress.advance(task, n)))
        elapsed = time.perf_counter() - t0
        tools = service.tool_stats(since=started)
        groups = service.error_groups(limit=_ALL_GROUPS, since=started)
        stats = service.stats()
    calls = sum(t.calls for t in tools)
    failures = sum(t.failures for t in tools)
    screen.console.print(
        f"Recorded [bold]{calls:,}[/] calls ([red]{failures:,} failed[/]) in {elapsed:.2f} s "
        f"({calls / elapsed:,.0f} calls/s), {stats.dropped} dropped, "
        f"in [cyan]{escape(str(service.db_path))}[/]",
        soft_wrap=True,
    )
    title = "Per-tool calls and latency (ms), computed in SQL from the trail"
    screen.table(tool_table(tools, title))
    if groups:
        top = sorted(groups, key=lambda g: (-g.count, g.tool_name, g.error_message or ""))[:5]
        screen.table(error_table(top, "Most frequent errors"))
    where = "" if db_path is None else f" --db {shlex.quote(str(db_path))}"
    screen.print("")
    screen.print("Try next:")
    for command in ("logs", "stats", "tail -f"):
        screen.print(f"  finops-audit {command}{where}")


#: Every error group of the demo's run (it makes a handful), to sort them by count here.
_ALL_GROUPS = 1000


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
    """ISO-8601 as is; an age such as ``24h`` or ``1h30m`` becomes now minus that.

    Anything else is an error that shows both accepted forms.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        return text
    try:
        return datetime.now(timezone.utc) - parse_duration(text, name=name)
    except (AuditError, OverflowError):
        raise click.ClickException(
            f"{name}={value!r} is not an ISO-8601 time (e.g. 2026-11-28T04:00:00Z) "
            "nor an age such as 30m, 24h or 7d"
        ) from None


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
    help="Only entries with a parameter value (never a key) containing this text.",
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
        title = f"{len(entries)} audit entries, newest first"
        Screen().table((title, ENTRY_COLUMNS, [entry_row(e) for e in entries]))


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
    screen = Screen()
    # One layout for the whole run, so lines that arrive later stay aligned with the first.
    layout = screen.layout(ENTRY_COLUMNS)

    def show(entries: list[AuditLogEntry]) -> None:
        if as_json:
            for entry in entries:
                click.echo(json.dumps(_entry_row(entry), ensure_ascii=False))
        else:
            rows = [entry_row(e) for e in entries]
            layout.widen(rows)
            for row in rows:
                for line in layout.lines(row):
                    screen.print(line)
        sys.stdout.flush()  # in a pipe too (| grep), each entry shows as it arrives

    filters = _filter_args(tool_name, status, since, until)
    with _open_existing(db_path) as service:
        last_id = 0
        if lines:
            latest = service.get_logs(limit=lines, **filters)
            show(latest[::-1])
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
                        show([entry])
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
    screen = Screen()
    if not tools:
        screen.print("No calls in this window.")
        return
    screen.table(tool_table(tools, "Per-tool calls and latency (ms)"))
    screen.table(slow_table(slow))
    if errors:
        screen.table(error_table(errors, "Most recent errors, grouped by tool and message"))
    screen.table(bucket_table(buckets, bucket))


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
@click.option(
    "--decrypt",
    is_flag=True,
    help="Write encrypted fields as plaintext (needs AUDIT_ENCRYPTION_KEYS); "
    "without it they stay ciphertext.",
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
    decrypt: bool,
) -> None:
    """Export entries oldest first to JSONL or CSV (OUTPUT '-' is stdout), in bounded memory."""
    fmt = fmt or ("csv" if output.suffix.lower() == ".csv" else "jsonl")
    filters = _filter_args(tool_name, status, since, until)
    to_stdout = str(output) == "-"
    with _open_existing(db_path) as service:
        total = service.count(**filters)
        if to_stdout:
            stdout = cast(IO[str], _ChunkedWriter(sys.stdout))
            written = service.export(stdout, fmt, decrypt=decrypt, **filters)
            return
        progress = Progress(
            TextColumn("[bold]exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        # Written to a private temporary file beside OUTPUT and renamed when
        # complete: a failed or interrupted export leaves no partial file.
        try:
            with (
                atomic_path(output, overwrite=True) as tmp,
                open(tmp, "w", encoding="utf-8", newline="") as stream,
                progress,
            ):
                task = progress.add_task("rows", total=total)
                written = service.export(
                    stream,
                    fmt,
                    progress=lambda n: progress.advance(task, n),
                    decrypt=decrypt,
                    **filters,
                )
        except OSError as exc:
            if isinstance(exc, AuditError):
                raise
            raise click.ClickException(
                f"cannot write {output}: {exc.strerror or exc}; nothing was written"
            ) from None
    click.echo(f"exported {written:,} entries to {output} ({fmt})", err=True)


@main.command()
@_db_option
@click.option("--older-than", required=True, help="Age of entries to delete, e.g. 90d, 12h.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_user_errors
def purge(db_path: Path | None, older_than: str, yes: bool) -> None:
    """Delete entries older than --older-than, in small batches, leaving a signed checkpoint."""
    age = parse_duration(older_than, name="--older-than")
    with _open_existing(db_path, write=True) as service:
        if not yes:
            click.confirm(
                f"Delete audit entries older than {format_duration(age)} from {service.trail}?",
                abort=True,
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


@main.command("rotate-keys")
@_db_option
@click.option(
    "--status", "status_only", is_flag=True, help="Count rows per key id; change nothing."
)
@click.option(
    "--batch-size",
    default=200,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Rows re-wrapped per transaction.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@_user_errors
def rotate_keys(db_path: Path | None, status_only: bool, batch_size: int, as_json: bool) -> None:
    """Re-wrap every encrypted value under the keyring's first key (resumable: rerun it).

    Put the new key first in AUDIT_ENCRYPTION_KEYS and keep the old ones after it;
    remove an old key once --status counts no row for it.
    """
    if status_only:
        with _open_existing(db_path) as service:
            usage = service.key_usage()
        if as_json:
            click.echo(usage.model_dump_json())
            return
        first = _first_key_id(load_settings(db_path=db_path))
        for kid, rows in usage.rows_by_key.items():
            note = " (encrypts new entries)" if kid == first else ""
            click.echo(f"{kid}: {rows:,} rows{note}")
        if first is not None and first not in usage.rows_by_key:
            click.echo(f"{first}: 0 rows (encrypts new entries)")
        click.echo(f"not encrypted: {usage.plain_rows:,} rows of {usage.total_rows:,}")
        return
    with _open_existing(db_path, write=True) as service:
        report = service.rotate_keys(batch_size=batch_size)
    if as_json:
        click.echo(report.model_dump_json())
        return
    click.echo(
        f"re-wrapped {report.rows_rotated:,} rows under key {report.key_id} in "
        f"{report.batches} transactions ({report.rows_checked:,} encrypted rows checked)"
    )
    if report.unreadable:
        raise click.ClickException(
            f"{report.unreadable:,} rows name a key that is not in the keyring (or does not "
            "open them) and were left as they are; add that key after the first and rerun"
        )


def _first_key_id(settings: Any) -> str | None:
    from ._fieldcrypt import keyring_from_settings

    keyring = keyring_from_settings(settings)
    return keyring.primary if keyring is not None else None


def _proves(report: VerifyReport) -> str:
    """What an OK verify proves, with or without the key and anchors."""
    if report.keyed:
        text = (
            "Proves: no entry was changed, inserted, moved or deleted by anyone "
            "without AUDIT_HMAC_KEY"
        )
    else:
        text = (
            "Proves: the entries match their SHA-256 chain (no accidental damage); without "
            "AUDIT_HMAC_KEY anyone able to write the file can rebuild the chain"
        )
    if report.anchors_checked:
        return text + ", and the trail still holds every anchored entry."
    return text + "; deleted newest entries show only with --anchors FILE."


@main.command()
@_db_option
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--anchors",
    "anchors",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Anchor file (AUDIT_ANCHOR_PATH) to check the trail against: shows deleted newest rows.",
)
@_user_errors
def verify(db_path: Path | None, as_json: bool, anchors: Path | None) -> None:
    """Check the hash chain; exit status 1 at the first modified, missing or moved row.

    With AUDIT_HMAC_KEY the chain proves no entry was changed, inserted, moved or
    deleted by anyone without the key; without it, anyone able to write the file
    can rebuild the chain. Only --anchors shows deleted newest rows.
    """
    with _open_existing(db_path) as service:
        report = service.verify(anchors=anchors)
    if as_json:
        click.echo(report.model_dump_json())
    elif report.ok:
        extra = f", {report.legacy_rows} from before the chain" if report.legacy_rows else ""
        since = (
            f", after a purge through id {report.checkpoint_through_id}"
            if report.checkpoint_through_id is not None
            else ""
        )
        anchored = f", {report.anchors_checked:,} anchors held" if report.anchors_checked else ""
        click.echo(
            f"OK: {report.rows_checked:,} entries verified{extra}{since}"
            + (" (keyed)" if report.keyed else "")
            + anchored
        )
        click.echo(_proves(report))
    elif report.first_bad_id is None:
        click.echo(f"TAMPERED: {report.problem}", err=True)
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


@main.command()
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option(
    "--token",
    envvar="AUDIT_DASHBOARD_TOKEN",
    default=None,
    help="Access token (default: $AUDIT_DASHBOARD_TOKEN, else a random one, printed once).",
)
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    help="Another name browsers use for this server (Host/Origin check), e.g. behind a tunnel.",
)
@_user_errors
def serve(
    db_path: Path | None, host: str, port: int, token: str | None, allowed_hosts: tuple[str, ...]
) -> None:
    """Serve a read-only dashboard of the trail with a live stream (needs the dashboard extra).

    With AUDIT_DB_URL it shows the fleet's central trail. Prints the URL to open,
    with its token, once.
    """
    try:
        from .dashboard._serve import serve as run_dashboard
    except ImportError:
        raise click.ClickException(
            "finops-audit serve needs the dashboard extra: pip install 'finops-audit[dashboard]'"
        ) from None

    with _open_existing(db_path) as service:
        run_dashboard(
            service,
            host=host,
            port=port,
            token=token,
            allowed_hosts=allowed_hosts,
            echo=lambda line: click.echo(line),
        )


def _register_central() -> None:
    from ._cli_central import central

    main.add_command(central)


_register_central()


if __name__ == "__main__":  # pragma: no cover
    main()
