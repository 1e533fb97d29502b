"""A trail whose values are as wide as real ones get: seven-digit ids, long tool names,
five-digit milliseconds, long parameters and errors, and hostile text in them."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finops_audit import AuditService

from ._util import at, stamp

#: Box-drawing characters (U+2500 to U+257F): never in piped output.
BOX_DRAWING = re.compile("[\u2500-\u257f]")
#: SGR colour codes, the only escape sequences the CLI itself writes to a terminal.
SGR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Row:
    id: int
    seconds: float
    tool: str
    ms: float
    parameters: dict[str, Any]
    error: str | None

    @property
    def status(self) -> str:
        return "SUCCESS" if self.error is None else "FAILURE"

    @property
    def time(self) -> str:
        """As the CLI shows it: UTC to the millisecond."""
        return at(self.seconds).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    @property
    def fixed(self) -> list[str]:
        """The values that must appear whole, at any width."""
        return [str(self.id), self.time, self.tool, self.status, f"{self.ms:.3f}"]


LONG_ERROR = "ThrottlingError: Rate exceeded (ThrottlingException) " + "retry later " * 12
ROWS = [
    Row(
        1_234_567,
        1.5,
        "find_untagged_resources",
        1_234.567,
        {"region": "ap-southeast-2", "resource_types": ["ec2:instance", "s3:bucket"] * 6},
        LONG_ERROR,
    ),
    Row(1_234_568, 2.25, "get_tag_policy", 0.004, {"policy_name": "default"}, None),
    Row(
        1_234_569,
        3.0,
        "check_tag_compliance",
        7.5,
        {"note": "[red]not markup[/red] :smile: \u202eevil"},
        "ValueError: line one\nline two [/bold] \x1b]0;pwned\x07\x1b[2J",
    ),
]


def write_wide_trail(path: Path, rows: list[Row] = ROWS) -> None:
    """The schema made by the library (no hash chain), then ``rows`` with their own ids."""
    with AuditService(path, hash_chain=False) as service:
        service.count()
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO audit_logs (id, timestamp, tool_name, parameters, status, "
                "error_message, execution_time_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.id,
                        stamp(at(r.seconds)),
                        r.tool,
                        json.dumps(r.parameters),
                        r.status,
                        r.error,
                        r.ms,
                    )
                    for r in rows
                ],
            )
    finally:
        conn.close()


def many_rows(count: int) -> list[Row]:
    """``count`` plain rows, for output larger than a pipe's buffer."""
    return [
        Row(10 + i, i / 1000, "estimate_untagged_cost", 0.25, {"account_id": f"{i:012d}"}, None)
        for i in range(count)
    ]
