"""Find the Python blocks of README.md and docs/**/*.md, with their markers.

A block may be preceded by one marker comment:

- ``<!-- requires: MODULE -->``: it runs, on its own, only where MODULE imports (an MCP SDK);
  ``<!-- requires: postgres -->`` runs it with ``AUDIT_DB_URL`` set to a throw-away server;
- ``<!-- skip: reason -->``: it is never run; every such block is listed in the test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "Block", "blocks", "documents", "fences"]

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(
    r"(?:<!-- (?P<kind>skip|requires): (?P<arg>[^>]*?) -->\n)?^```python\n(?P<code>.*?)^```$",
    re.S | re.M,
)
_FENCE = re.compile(r"^```(\w*)", re.M)


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it is, its marker, its code."""

    path: str
    line: int
    kind: str | None
    arg: str | None
    code: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    rel = str(path.relative_to(ROOT))
    return [
        Block(
            rel,
            text.count("\n", 0, m.start("code")),
            m["kind"],
            (m["arg"] or "").strip() or None,
            m["code"],
        )
        for m in _BLOCK.finditer(text)
    ]


def fences(path: Path) -> list[str]:
    """The language of every opening fence (closing ones give '')."""
    return [m[1] for m in _FENCE.finditer(path.read_text(encoding="utf-8")) if m[1]]
