"""Aligned columns for the CLI that read well at 80 columns and in a pipe.

Why not rich's ``Table``: when a table is wider than the terminal, rich narrows
every column, so at 80 columns ids became ``20…``, statuses ``SUCCE…`` and the
parameters column vanished. Here the columns that identify a row (ids, times,
names, statuses, numbers) always get their full width and are never cut. Only
the free-text columns (parameters, errors) give way, the way ``kubectl get`` and
``docker ps`` do: shortened with an ellipsis (or wrapped, if the column asks),
and when the terminal leaves them too little room they move onto their own
indented lines under the row instead of vanishing.

In a pipe (``width=None``) there is no width to fit: one line per row, no box
drawing and no colour, free text capped at :data:`PIPE_TEXT_WIDTH` cells.
Every cell is cleaned of control characters first, so a tool's parameters or
error text cannot move the cursor, recolour the terminal or split a row.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.text import Text

__all__ = ["Cell", "Column", "Layout", "clean", "shorten"]

#: A cell: its text, or its text and a rich style (used on a terminal only).
Cell = str | tuple[str, str]

#: Free text in a pipe is cut at this many cells; ``--json``/``--csv`` give it whole.
PIPE_TEXT_WIDTH = 200
#: Below this many cells a free-text column moves under its row.
MIN_TEXT_WIDTH = 16
GAP = "  "
#: Between columns when the identifying columns would not fit the terminal with ``GAP``.
NARROW_GAP = " "
INDENT = "    "

_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char, f"\\u{ord(char):04x}")


def clean(text: str) -> str:
    """``text`` safe for one line of a terminal: tabs become spaces and other
    control characters (escape sequences, newlines, bidi overrides) become visible
    escapes such as ``\\n`` and ``\\u001b``."""
    return _UNSAFE.sub(_escape, text.replace("\t", " "))


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells, ending in ``…`` if it was cut."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return set_cell_size(text, width - 1).rstrip() + "…"


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


@dataclass(frozen=True)
class Column:
    """One column. ``text``: free text that may be shortened (or wrapped, with
    ``wrap``); every other column keeps its full width. ``hide_empty``: left out
    when no row has a value (a trail without MCP clients has no client column)."""

    header: str
    right: bool = False
    text: bool = False
    wrap: bool = False
    hide_empty: bool = False


class Layout:
    """Widths for a set of columns, grown with :meth:`widen` as rows are seen.

    ``width`` is the terminal's width, or ``None`` in a pipe. ``tail -f`` keeps
    one layout for rows that arrive later, so its lines stay aligned.
    """

    def __init__(self, columns: Sequence[Column], width: int | None) -> None:
        self.columns = tuple(columns)
        self.width = width
        self._widths = [cell_len(c.header) for c in self.columns]
        self._used = [not c.hide_empty for c in self.columns]

    def widen(self, rows: Iterable[Sequence[Cell]]) -> None:
        """Make room for ``rows`` (the cells are cleaned the same way as in :meth:`lines`)."""
        for row in rows:
            for i, cell in enumerate(row):
                text = clean(_text(cell))
                if text:
                    self._used[i] = True
                self._widths[i] = max(self._widths[i], cell_len(text))

    def _plan(self) -> tuple[list[int], bool, str]:
        """The width of each shown column, whether free text goes under the rows, the gap."""
        shown = self._shown()
        widths = list(self._widths)
        texts = [i for i in shown if self.columns[i].text]
        if self.width is None:
            for i in texts:
                widths[i] = min(widths[i], PIPE_TEXT_WIDTH)
            return widths, False, GAP
        fixed = sum(widths[i] for i in shown if i not in texts)
        gap = GAP
        if fixed + len(GAP) * (len(shown) - len(texts) - 1) > self.width:
            gap = NARROW_GAP
        room = self.width - fixed - len(gap) * (len(shown) - 1)
        # Share the room out: narrow columns get what they need, wide ones split the rest.
        pending = sorted(texts, key=lambda i: widths[i])
        while pending:
            share = room // len(pending)
            i = pending.pop(0)
            widths[i] = max(0, min(widths[i], share))
            room -= widths[i]
        stacked = any(
            widths[i] < min(MIN_TEXT_WIDTH, self._widths[i]) or widths[i] == 0 for i in texts
        )
        return widths, stacked, gap

    def header(self) -> Text:
        """The header line (bold on a terminal)."""
        widths, stacked, gap = self._plan()
        cells: list[tuple[int, Cell]] = [
            (i, (self.columns[i].header, "bold"))
            for i in self._shown()
            if not (stacked and self.columns[i].text)
        ]
        return self._join(cells, widths, gap)

    def lines(self, row: Sequence[Cell]) -> list[Text]:
        """The lines of one row: one, plus wrapped text or free text moved under it."""
        widths, stacked, gap = self._plan()
        cells: list[tuple[int, Cell]] = []
        below: list[Text] = []
        more: dict[int, list[str]] = {}
        for i in self._shown():
            column = self.columns[i]
            text, style = clean(_text(row[i])), _style(row[i])
            if column.text and stacked:
                if text:
                    below.append(self._below(column.header, text, style))
                continue
            if column.text and column.wrap and self.width is not None:
                text, *more[i] = _wrap(text, max(widths[i], 1))
            elif column.text:
                text = shorten(text, widths[i])
            cells.append((i, (text, style)))
        out = [self._join(cells, widths, gap)]
        for n in range(max(map(len, more.values()), default=0)):
            cont: list[tuple[int, Cell]] = [
                (i, (_at(more.get(i, []), n), _style(cell))) for i, cell in cells
            ]
            out.append(self._join(cont, widths, gap))
        return out + below

    def _shown(self) -> list[int]:
        return [i for i, used in enumerate(self._used) if used]

    def _below(self, header: str, text: str, style: str) -> Text:
        """Free text on its own line under the row, for a terminal too narrow for it."""
        room = (self.width or 0) - len(INDENT) - cell_len(header) - 2
        value = shorten(text, max(room, MIN_TEXT_WIDTH))
        return Text.assemble(INDENT, (f"{header}: ", "dim"), (value, style), no_wrap=True)

    def _join(self, cells: Sequence[tuple[int, Cell]], widths: Sequence[int], gap: str) -> Text:
        line = Text(no_wrap=True)
        for n, (i, cell) in enumerate(cells):
            text, style = _text(cell), _style(cell)
            pad = " " * max(0, widths[i] - cell_len(text))
            last = n == len(cells) - 1
            if n:
                line.append(gap)
            if self.columns[i].right:
                line.append(pad)
                line.append(text, style)
            else:
                line.append(text, style)
                if not last:
                    line.append(pad)
        line.rstrip()
        return line


def _at(parts: list[str], n: int) -> str:
    return parts[n] if n < len(parts) else ""


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def _style(cell: Cell) -> str:
    return "" if isinstance(cell, str) else cell[1]
