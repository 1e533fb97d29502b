"""What logs, tail, stats and demo print, at 80, 100 and 200 columns and in a pipe.

Terminal output is driven through CliRunner with ``FORCE_COLOR`` and ``COLUMNS`` (rich
then treats stdout as a terminal of that width); without them stdout is a pipe.
The same promises are checked in real terminals and pipes in test_cli_pipes.py.
"""

from __future__ import annotations

import io
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len
from rich.console import Console

from finops_audit import AuditService
from finops_audit._cli_table import Column, Layout, clean, shorten
from finops_audit._cli_views import ENTRY_COLUMNS, Screen
from finops_audit._durations import format_duration
from finops_audit.cli import _error_text, main
from finops_audit.config import load_settings
from finops_audit.exceptions import AuditStorageError

from ._util import no_traceback
from ._wide import BOX_DRAWING, LONG_ERROR, ROWS, SGR, write_wide_trail

WIDTHS = [80, 100, 200]


def run(*args: str, width: int | None) -> Result:
    """The CLI on a terminal of ``width`` columns, or into a pipe (``None``)."""
    env = {"COLUMNS": str(width), "FORCE_COLOR": "1"} if width else {"COLUMNS": "80"}
    result = CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)
    no_traceback(result.output, result.stderr)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def visible(text: str) -> list[str]:
    """Lines as the eye sees them: colour codes removed. Any other escape survives."""
    return SGR.sub("", text).splitlines()


@pytest.fixture
def wide_db(db_path: Path) -> Path:
    write_wide_trail(db_path)
    return db_path


def assert_rows_whole(lines: list[str]) -> None:
    """Each row's id, time, tool, status and ms appear whole, in order, on one line."""
    for row in ROWS:
        [line] = [line for line in lines if line.split()[:1] == [str(row.id)]]
        tokens = line.split()
        assert tokens[:6] == [str(row.id), *row.time.split(), row.tool, row.status, f"{row.ms:.3f}"]


@pytest.mark.parametrize("width", WIDTHS)
def test_logs_on_a_terminal_never_cuts_identifying_columns(wide_db: Path, width: int) -> None:
    lines = visible(run("logs", "--db", str(wide_db), width=width).stdout)
    assert_rows_whole(lines)
    assert all(cell_len(line) <= width for line in lines), [
        (cell_len(line), line) for line in lines if cell_len(line) > width
    ]
    text = "\n".join(lines)
    # parameters and errors are there at every width, shortened where too long
    assert "parameters" in text
    assert "error" in text
    assert '{"region": "ap-southeast-2"' in text
    assert "ThrottlingError: Rate exceeded" in text
    assert "…" in text
    assert LONG_ERROR.strip() not in text
    assert "┃" not in text


def test_logs_at_200_columns_is_one_line_per_entry(wide_db: Path) -> None:
    lines = visible(run("logs", "--db", str(wide_db), width=200).stdout)
    assert lines[0] == "3 audit entries, newest first"
    assert lines[1].split() == [
        "id",
        "time",
        "(UTC)",
        "tool",
        "status",
        "ms",
        "parameters",
        "error",
    ]
    assert len(lines) == 2 + len(ROWS)


def test_logs_at_80_columns_puts_free_text_under_the_row(wide_db: Path) -> None:
    lines = visible(run("logs", "--db", str(wide_db), width=80).stdout)
    assert lines[1].split() == ["id", "time", "(UTC)", "tool", "status", "ms"]
    row = lines.index(next(line for line in lines if line.startswith("1234567")))
    assert lines[row + 1].lstrip().startswith('parameters: {"region": "ap-southeast-2"')
    assert lines[row + 2].lstrip().startswith("error: ThrottlingError: Rate exceeded")
    assert lines[row + 2].endswith("…")


def test_logs_in_a_pipe_is_plain_aligned_text(wide_db: Path) -> None:
    out = run("logs", "--db", str(wide_db), width=None).stdout
    assert not BOX_DRAWING.search(out)
    assert "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 2 + len(ROWS)  # title, header, one line per entry
    assert_rows_whole(lines)
    # aligned: every value starts where its column's header does
    header = lines[1]
    for row in ROWS:
        [line] = [line for line in lines if line.startswith(str(row.id))]
        assert line[header.index("tool") :].startswith(row.tool)
        assert line[header.index("status") :].startswith(row.status)
        assert line[header.index("parameters") :].startswith("{")


def test_hostile_text_cannot_inject_markup_or_escapes(wide_db: Path) -> None:
    for width in (None, 200):
        out = run("logs", "--db", str(wide_db), width=width).stdout
        assert "\x1b" not in SGR.sub("", out)  # only our colours, never the trail's escapes
        text = SGR.sub("", out)
        assert "[red]not markup[/red] :smile:" in text  # shown, not interpreted
        assert "\\u202eevil" in text
        assert "line one\\nline two [/bold]" in text
        assert len([line for line in text.splitlines() if "1234569" in line]) == 1
    piped = run("logs", "--db", str(wide_db), width=None).stdout
    assert "line one\\nline two [/bold] \\u001b]0;pwned\\u0007\\u001b[2J" in piped


@pytest.mark.parametrize("width", [*WIDTHS, None])
def test_tail_keeps_every_identifying_column(wide_db: Path, width: int | None) -> None:
    lines = visible(run("tail", "--db", str(wide_db), "-n", "3", width=width).stdout)
    assert_rows_whole(lines)
    assert [line.split()[0] for line in lines if line[:1].isdigit()] == [str(r.id) for r in ROWS]
    if width is not None:
        assert all(cell_len(line) <= width for line in lines)
    else:
        assert len(lines) == len(ROWS)


@pytest.mark.parametrize("width", [*WIDTHS, None])
def test_stats_numbers_are_whole(wide_db: Path, width: int | None) -> None:
    out = run("stats", "--db", str(wide_db), "--since", "3650d", width=width)
    lines = visible(out.stdout)
    tools = {line.split()[0]: line.split() for line in lines if line.split()[:1] == [ROWS[0].tool]}
    assert tools[ROWS[0].tool][1:] == ["1", "1", "100.0", *["1234.567"] * 4]
    assert any(line.split()[:2] == ["1234.567", ROWS[0].tool] for line in lines)
    if width is None:
        assert not BOX_DRAWING.search(out.stdout)
    else:
        assert all(cell_len(line) <= width for line in lines)


def test_demo_ends_with_what_to_try_next_and_the_most_frequent_errors(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    out = run("demo", "--db", str(db), "--calls", "600", width=None).stdout
    assert not BOX_DRAWING.search(out)  # no progress bar or boxes in a pipe
    lines = out.splitlines()
    assert lines[-4:] == [
        "Try next:",
        f"  finops-audit logs --db {db}",
        f"  finops-audit stats --db {db}",
        f"  finops-audit tail -f --db {db}",
    ]
    start = lines.index("Most frequent errors")
    assert lines[start + 1].split()[:2] == ["count", "tool"]
    rows = lines[start + 2 : lines.index("", start)]
    counts = [int(line.split()[0].replace(",", "")) for line in rows]
    assert len(counts) >= 3
    assert counts == sorted(counts, reverse=True)
    with AuditService(db) as service:
        groups = service.error_groups(limit=100)
    assert counts == sorted((g.count for g in groups), reverse=True)[: len(counts)]


@pytest.mark.parametrize("width", WIDTHS)
def test_demo_tables_fit_the_terminal(tmp_path: Path, width: int) -> None:
    out = run("demo", "--db", str(tmp_path / "d.db"), "--calls", "300", width=width).stdout
    lines = visible(out)
    tables = [line for line in lines if not line.startswith(("Recorded", "  finops-audit"))]
    assert all(cell_len(line) <= width for line in tables)
    [header] = [line for line in lines if line.split()[:2] == ["tool", "calls"]]
    assert header.split() == ["tool", "calls", "failed", "fail", "%", "p50", "p95", "p99", "max"]
    assert "…" not in "\n".join(lines[lines.index(header) : lines.index(header) + 5])


# ------------------------------------------------------------------ the layout itself


def render(columns: list[Column], rows: list[list[str]], width: int | None) -> list[str]:
    buffer = io.StringIO()
    screen = Screen(Console(file=buffer, width=width or 80, force_terminal=width is not None))
    screen.table(("", columns, rows))  # type: ignore[arg-type]
    return visible(buffer.getvalue())


def test_fixed_columns_wider_than_the_terminal_overflow_rather_than_cut() -> None:
    name = "a_tool_name_far_longer_than_any_terminal_is_wide_" * 2
    lines = render(
        [Column("id"), Column("tool"), Column("note", text=True)], [["7", name, "x"]], 80
    )
    assert name in lines[1]  # the terminal wraps it; nothing is lost
    assert lines[2].strip() == "note: x"


def test_free_text_takes_only_what_it_needs() -> None:
    columns = [Column("a"), Column("short", text=True), Column("long", text=True)]
    lines = render(columns, [["1", "tiny", "x" * 300]], 80)
    assert lines[1].split()[:2] == ["1", "tiny"]
    assert lines[1].endswith("…")
    assert cell_len(lines[1]) == 80


def test_wide_characters_are_measured_in_cells() -> None:
    lines = render([Column("tool"), Column("note", text=True)], [["工具名", "説明" * 60]], 40)
    assert lines[1].startswith("工具名  ")
    assert cell_len(lines[1]) <= 40


def test_clean_and_shorten() -> None:
    assert clean("a\tb\nc\x1b[31m\u202e") == "a b\\nc\\u001b[31m\\u202e"
    assert shorten("abcdef", 6) == "abcdef"
    assert shorten("abcdef", 4) == "abc…"
    assert shorten("abcdef", 1) == "…"
    assert shorten("abcdef", 0) == ""


def test_layout_grows_for_rows_seen_later() -> None:
    layout = Layout(ENTRY_COLUMNS[:2], None)
    layout.widen([["1", "t"]])
    first = layout.lines(["1", "t"])[0].plain
    layout.widen([["1234567", "t"]])
    assert layout.lines(["1234567", "t"])[0].plain == "1234567  t"
    assert first == " 1  t"  # as wide as the header "id"


def test_error_text_names_the_file_and_readers_never_speak_of_writing(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    bare = sqlite3.DatabaseError("file is not a database")
    assert _error_text(bare, db, reading=True) == f"{db}: file is not a database"
    assert _error_text(bare, None, reading=False) == (
        f"{load_settings().db_path}: file is not a database"
    )
    writing = AuditStorageError(f"cannot write to {db} (disk full); entries are kept and retried")
    assert _error_text(writing, db, reading=True) == f"cannot read {db} (disk full)"
    assert _error_text(writing, db, reading=False) == str(writing)
    missing = FileNotFoundError(2, "No such file or directory", str(db))
    assert str(db) in _error_text(missing, None, reading=True)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (timedelta(days=1), "1 day"),
        (timedelta(days=90), "90 days"),
        (timedelta(hours=1, minutes=30), "1 hour 30 minutes"),
        (timedelta(hours=36), "1 day 12 hours"),
        (timedelta(weeks=2), "14 days"),
        (timedelta(seconds=61), "1 minute 1 second"),
        (timedelta(seconds=0.5), "0.5 seconds"),
        (timedelta(days=10_000), "10,000 days"),
    ],
)
def test_format_duration(value: timedelta, words: str) -> None:
    assert format_duration(value) == words
