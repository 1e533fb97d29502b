"""What ``logs``, ``tail``, ``stats`` and ``demo`` print: their columns and rows.

A :class:`Screen` decides once whether stdout is a terminal. On a terminal the
tables fit its width (see :mod:`._cli_table`) with a bold header and coloured
statuses; in a pipe they are plain aligned text, one line per row, with no box
drawing and no escape codes, so ``grep``, ``sort`` and ``awk`` work on them.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from ._cli_table import Cell, Column, Layout
from .analytics import ErrorGroup, TimeBucket, ToolStats
from .models import AuditLogEntry, AuditStatus

__all__ = [
    "ENTRY_COLUMNS",
    "Screen",
    "bucket_table",
    "entry_row",
    "error_table",
    "slow_table",
    "tool_table",
]

_TIME = "%Y-%m-%d %H:%M:%S.%f"
#: The columns of an audit entry in ``logs`` and ``tail``.
ENTRY_COLUMNS = (
    Column("id", right=True),
    Column("time (UTC)"),
    Column("tool"),
    Column("status"),
    Column("ms", right=True),
    Column("client", hide_empty=True),
    Column("parameters", text=True),
    Column("error", text=True),
)

Table = tuple[str, Sequence[Column], list[Sequence[Cell]]]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Let the command's wrapper end a closed pipe, the same way for every output."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "stdout was closed")


class Screen:
    """stdout as the CLI sees it: a terminal of some width, or a pipe (``width`` None)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console if console is not None else _Console(highlight=False)
        self.width: int | None = self.console.width if self.console.is_terminal else None
        self._started = False

    def print(self, line: Text | str) -> None:
        """One line as is: never wrapped or cropped by rich, no markup read from it."""
        self._started = True
        self.console.print(line, soft_wrap=True, markup=False, highlight=False, emoji=False)

    def table(self, table: Table, *, header: bool = True) -> None:
        """A title line, the header and the rows, aligned; a blank line before, if not first."""
        title, columns, rows = table
        layout = Layout(columns, self.width)
        layout.widen(rows)
        if self._started:
            self.print("")
        if title:
            self.print(Text(title, style="bold"))
        if header:
            self.print(layout.header())
        for row in rows:
            for line in layout.lines(row):
                self.print(line)

    def layout(self, columns: Sequence[Column]) -> Layout:
        return Layout(columns, self.width)

    def flush(self) -> None:
        self.console.file.flush()


def _status(status: AuditStatus) -> Cell:
    return (status.value, "green" if status is AuditStatus.SUCCESS else "red")


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def entry_row(e: AuditLogEntry) -> list[Cell]:
    """An entry's cells in :data:`ENTRY_COLUMNS` order; nothing is cut here."""
    client = "/".join(x for x in (e.client_name, e.client_version) if x) or e.user or ""
    return [
        str(e.id),
        e.timestamp.strftime(_TIME)[:-3],
        e.tool_name,
        _status(e.status),
        _ms(e.execution_time_ms),
        client,
        json.dumps(e.parameters, ensure_ascii=False),
        (e.error_message or "", "red"),
    ]


def tool_table(tools: Sequence[ToolStats], title: str) -> Table:
    columns = [
        Column("tool"),
        *(Column(h, right=True) for h in ("calls", "failed", "fail %")),
        *(Column(h, right=True) for h in ("p50", "p95", "p99", "max")),
    ]
    rows: list[Sequence[Cell]] = [
        [
            t.tool_name,
            f"{t.calls:,}",
            f"{t.failures:,}",
            f"{100 * t.failure_rate:.1f}",
            _ms(t.p50_ms),
            _ms(t.p95_ms),
            _ms(t.p99_ms),
            _ms(t.max_ms),
        ]
        for t in tools
    ]
    return title, columns, rows


def error_table(errors: Sequence[ErrorGroup], title: str) -> Table:
    columns = [
        Column("count", right=True),
        Column("tool"),
        Column("last seen (UTC)"),
        Column("error", text=True, wrap=True),
    ]
    rows: list[Sequence[Cell]] = [
        [
            f"{g.count:,}",
            g.tool_name,
            f"{g.last_seen:%Y-%m-%d %H:%M:%S}",
            (g.error_message or "", "red"),
        ]
        for g in errors
    ]
    return title, columns, rows


def slow_table(entries: Sequence[AuditLogEntry]) -> Table:
    columns = [
        Column("ms", right=True),
        Column("tool"),
        Column("time (UTC)"),
        Column("status"),
        Column("id", right=True),
    ]
    rows: list[Sequence[Cell]] = [
        [
            _ms(e.execution_time_ms),
            e.tool_name,
            e.timestamp.strftime(_TIME)[:-3],
            _status(e.status),
            str(e.id),
        ]
        for e in entries
    ]
    return f"The {len(entries)} slowest calls", columns, rows


def bucket_table(buckets: Sequence[TimeBucket], bucket: str) -> Table:
    columns = [Column("start (UTC)"), Column("calls", right=True), Column("failed", right=True)]
    rows: list[Sequence[Cell]] = [
        [f"{b.start:%Y-%m-%d %H:%M}", f"{b.calls:,}", f"{b.failures:,}"] for b in buckets
    ]
    return f"Calls per {bucket}", columns, rows
