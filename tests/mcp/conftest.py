"""tests/mcp: real MCP SDKs, real clients, real subprocess servers.

The main test venv has no MCP SDK, so every module here skips cleanly without
one. ``.ci/mcp-e2e`` runs them in one venv per SDK with ``FINOPS_REQUIRE_SDK``
set (``mcp1``, ``mcp2`` or ``fastmcp``): then a missing SDK is an error, not a
skip, and a run in which no test passed fails.
"""

from __future__ import annotations

import os
from importlib.util import find_spec

import pytest

REQUIRED = os.environ.get("FINOPS_REQUIRE_SDK") or None
_KNOWN = ("mcp1", "mcp2", "fastmcp")


def _has(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed_server_sdks() -> list[str]:
    """The server SDKs importable here: fastmcp, mcp2 (``MCPServer``), mcp1 (``FastMCP``)."""
    sdks = []
    if _has("fastmcp"):
        sdks.append("fastmcp")
    if _has("mcp"):
        sdks.append("mcp2" if _has("mcp.server.mcpserver") else "mcp1")
    return sdks


_passed = 0


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRED is None:
        return
    if REQUIRED not in _KNOWN:
        raise pytest.UsageError(f"FINOPS_REQUIRE_SDK={REQUIRED!r}; expected one of {_KNOWN}")
    if REQUIRED not in installed_server_sdks():
        raise pytest.UsageError(
            f"FINOPS_REQUIRE_SDK={REQUIRED} but that SDK is not importable here "
            f"(found: {installed_server_sdks() or 'none'}); the venv is broken"
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _passed
    # Only tests run against the required SDK count (their ids name it).
    if report.when == "call" and report.passed and REQUIRED and REQUIRED in report.nodeid:
        _passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRED is not None and _passed == 0 and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nFINOPS_REQUIRE_SDK={REQUIRED}: no test against {REQUIRED} passed (all skipped?)")
