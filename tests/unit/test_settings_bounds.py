"""Every setting is recorded unchanged or refused at start (issue 10, section 3).

Non-finite and absurd numbers, an empty database path, and unknown ``AUDIT_*``
variables: each is tried through the environment (as an MCP client launches a
server) and, where it applies, as an explicit argument.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest

import finops_audit._envcheck as envcheck
from finops_audit import AuditConfigError, AuditService, AuditSettings
from finops_audit.config import load_settings

FLOAT_SETTINGS = [
    name
    for name, info in AuditSettings.model_fields.items()
    if info.annotation in (float, float | None)
]


def test_the_float_settings_are_the_ones_we_think() -> None:
    # A new float setting joins the non-finite checks below automatically.
    assert {"retention_days", "flush_interval", "forward_max_rate"} <= set(FLOAT_SETTINGS)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "NaN", "1e400"])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_non_finite_env_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    variable = f"AUDIT_{name.upper()}"
    monkeypatch.setenv(variable, value)
    with pytest.raises(AuditConfigError, match=variable):
        load_settings()


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_non_finite_arguments_are_refused_naming_the_argument(
    tmp_path: Path, name: str, value: float
) -> None:
    with pytest.raises(AuditConfigError, match=f"argument {name}="):
        AuditService(tmp_path / "a.db", **{name: value})


@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "36501", "1e9"])
def test_absurd_retention_days_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", value)
    with pytest.raises(AuditConfigError, match="AUDIT_RETENTION_DAYS"):
        load_settings()


@pytest.mark.parametrize("value", ["0.5", "30", "36500"])
def test_sensible_retention_days_are_kept(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", value)
    assert load_settings().retention_days == float(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("forward_max_rate", "1e12"), ("buffer_retention_hours", "1e9"), ("flush_interval", "1e6")],
)
def test_other_unbounded_numbers_have_a_ceiling(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"AUDIT_{name.upper()}", value)
    with pytest.raises(AuditConfigError, match=f"AUDIT_{name.upper()}"):
        load_settings()


@pytest.mark.parametrize("value", ["", " ", "."])
def test_empty_db_path_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AUDIT_DB_PATH", value)
    with pytest.raises(AuditConfigError, match=r"AUDIT_DB_PATH.*must not be empty"):
        load_settings()


def test_empty_db_path_argument_is_refused() -> None:
    with pytest.raises(AuditConfigError, match="db_path"):
        AuditService("")


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envcheck, "_warned", set())


@pytest.mark.usefixtures("fresh_warnings")
def test_unknown_variable_gets_one_warning_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUDIT_RETENTON_DAYS", "30")
    caplog.set_level(logging.WARNING, logger="finops_audit")
    for _ in range(3):
        AuditService(tmp_path / "a.db").close()
    found = [r.getMessage() for r in caplog.records if "AUDIT_RETENTON_DAYS" in r.getMessage()]
    assert found == [
        "finops_audit ignores the unknown variable AUDIT_RETENTON_DAYS "
        "(did you mean AUDIT_RETENTION_DAYS?)"
    ]


@pytest.mark.usefixtures("fresh_warnings")
def test_lower_case_and_far_off_names(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("audit_batchsize", "10")
    monkeypatch.setenv("AUDIT_XYZZY", "1")
    caplog.set_level(logging.WARNING, logger="finops_audit")
    load_settings()
    text = caplog.text
    assert "audit_batchsize (did you mean AUDIT_BATCH_SIZE?)" in text
    assert "AUDIT_XYZZY (no setting has a similar name)" in text


@pytest.mark.usefixtures("fresh_warnings")
def test_known_variables_get_no_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in AuditSettings.model_fields:
        if name in {"flush_interval", "retention_days", "batch_size"}:
            monkeypatch.setenv(f"AUDIT_{name.upper()}", "1")
    monkeypatch.setenv("AUDIT_DASHBOARD_TOKEN", "t")
    monkeypatch.setenv("NOT_AUDIT_X", "1")
    caplog.set_level(logging.WARNING, logger="finops_audit")
    load_settings()
    assert "unknown variable" not in caplog.text


def test_the_warning_reaches_stderr_of_a_bare_server(tmp_path: Path) -> None:
    """Nothing configured logging: the warning still reaches stderr, never stdout."""
    done = subprocess.run(
        [sys.executable, "-c", "import finops_audit; finops_audit.AuditService().close()"],
        cwd=tmp_path,
        env={"AUDIT_FLUSH_INTERVALL": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "AUDIT_FLUSH_INTERVALL (did you mean AUDIT_FLUSH_INTERVAL?)" in done.stderr
