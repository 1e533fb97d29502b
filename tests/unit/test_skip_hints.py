"""Skipped tests end the run with one line per cause, saying how to run them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._skip_hints import how_to_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        ("PostgreSQL server binaries not found and AUDIT_TEST_PG_DSN not set", "postgresql-15"),
        ("could not import 'mcp': No module named 'mcp'", ".ci/mcp-e2e"),
        ("mcp 1.x has no middleware", "mcp 2.x"),
        ("mounting a tmpfs needs root", "as root"),
        ("/usr/bin/chromium is missing (apt-get install chromium)", "apt-get install chromium"),
        (
            "could not import 'starlette': No module named 'starlette'",
            "pip install -q -e '.[test]'",
        ),
        ("something nobody foresaw", "pytest -rs"),
    ],
)
def test_each_known_cause_has_a_way_to_run_it(reason: str, hint: str) -> None:
    assert hint in how_to_run(reason)


def test_a_run_with_skips_ends_with_one_line_per_cause(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests._skip_hints import pytest_terminal_summary  # noqa: F401\n"
    )
    (tmp_path / "test_some.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.parametrize("i", range(3))
            def test_pg(i):
                pytest.skip("PostgreSQL server binaries not found")

            def test_module():
                pytest.importorskip("no_such_module_for_the_hint_test")

            def test_runs():
                pass
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if " skipped: " in line]
    assert lines == [
        "3 skipped: PostgreSQL server binaries not found; run: apt-get install postgresql-15 "
        "(or set AUDIT_TEST_PG_DSN=postgresql://...) and rerun .venv/bin/pytest",
        "1 skipped: could not import 'no_such_module_for_the_hint_test': No module named "
        "'no_such_module_for_the_hint_test'; run: .venv/bin/pip install -q -e '.[test]' and "
        "rerun .venv/bin/pytest",
    ]


def test_a_run_without_skips_prints_no_hint(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests._skip_hints import pytest_terminal_summary  # noqa: F401\n"
    )
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "how to run them" not in done.stdout
