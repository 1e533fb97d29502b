"""After the run, one line per cause of skipped tests, saying how to run them.

Why: the README's test command should run every test; what it cannot run on
this machine (no PostgreSQL binaries, not root, no browser) must say so in a
line a newcomer can act on, not hide in "12 skipped".
"""

from __future__ import annotations

from collections import Counter

import pytest

__all__ = ["how_to_run", "pytest_terminal_summary"]

#: (text in the skip reason, lower-cased) -> what to do to run those tests.
_HINTS: tuple[tuple[str, str], ...] = (
    (
        "postgresql",
        "apt-get install postgresql-15 (or set AUDIT_TEST_PG_DSN=postgresql://...) "
        "and rerun .venv/bin/pytest",
    ),
    ("mcp 1.x has no middleware", "expected on mcp 1.x: bash .ci/mcp-e2e runs them on mcp 2.x"),
    (
        "'mcp'",
        ".venv/bin/pip install -q -e '.[test]' (brings fastmcp and mcp 2.x); "
        "mcp 1.x: bash .ci/mcp-e2e",
    ),
    ("tmpfs", "run the tests as root (the disk-full tests mount a small tmpfs)"),
    ("chromium", "apt-get install chromium and rerun .venv/bin/pytest tests/dashboard"),
    ("tzdata", "apt-get install tzdata (or pip install tzdata)"),
    ("/proc", "run on Linux (the fleet fault tests find processes through /proc)"),
    ("symlink", "run on a POSIX system"),
    ("posix", "run on a POSIX system"),
)
_REINSTALL = ".venv/bin/pip install -q -e '.[test]' and rerun .venv/bin/pytest"


def how_to_run(reason: str) -> str:
    """What to do so that tests skipped for ``reason`` run."""
    low = reason.lower()
    for needle, hint in _HINTS:
        if needle in low:
            return hint
    if "import" in low or "not installed" in low or "need" in low:
        return _REINSTALL
    return "see pytest -rs for the reason"


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr
    return str(text).removeprefix("Skipped: ").strip()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.skipped]
    if not skipped:
        return
    causes = Counter(_reason(r) for r in skipped)
    terminalreporter.section("skipped tests: how to run them", sep="-")
    for reason, count in causes.most_common():
        terminalreporter.write_line(f"{count} skipped: {reason}; run: {how_to_run(reason)}")
