"""``get_logs(parameter_value=...)`` on a SQLite trail: what a search finds, and what it must not.

The promise (``storage/_value_match.py``): an entry matches when one of its
parameter *values*, at any depth, contains the text, ASCII case ignored; keys
never match; ``%``, ``_`` and ``\\`` are literal characters, never LIKE
wildcards; integers match by their digits, other numbers, booleans and null
never. Each case holds a near miss that a wildcard or a key search would find.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from finops_audit import AuditService, audit_tool_sync

VALUES = {
    "snake": "cost_center",
    "snakemiss": "costXcenter",  # `_` as a wildcard would match this too
    "pct": "100% off",
    "pctmiss": "1000 off",  # `%` as a wildcard would match this too
    "slash": "dir\\file",
    "slashmiss": "dirfile",
    "nested": {"deep": ["eu-west-1"]},
    "number": 4711,
    "fraction": 47.11,
    "flag": True,
}


@pytest.fixture
def found(svc: AuditService) -> dict[str, set[str]]:
    """One call per value; the result maps a needle to the keys of the calls it finds."""

    @audit_tool_sync(name="tool", service=svc)
    def tool(which: str, value: object) -> None:
        return None

    for which, value in VALUES.items():
        tool(which=f"#{which}", value=value)
    svc.flush()

    def search(needle: str) -> set[str]:
        return {
            str(e.parameters["which"]).lstrip("#")
            for e in svc.get_logs(parameter_value=needle, limit=100)
        }

    return {
        needle: search(needle)
        for needle in (
            "t_c",
            "0% ",
            "r\\f",
            "EU-WEST",
            "471",
            "47.1",
            "true",
            "value",
            "which",
            "deep",
            "%",
            "_",
        )
    }


@pytest.mark.parametrize(
    ("needle", "expected"),
    [
        pytest.param("t_c", {"snake"}, id="underscore-literal"),
        pytest.param("0% ", {"pct"}, id="percent-literal"),
        pytest.param("r\\f", {"slash"}, id="backslash-literal"),
        pytest.param("EU-WEST", {"nested"}, id="ascii-case-nested"),
        pytest.param("471", {"number"}, id="integer-digits"),
        pytest.param("47.1", set(), id="fraction-never"),
        pytest.param("true", set(), id="boolean-never"),
        pytest.param("value", set(), id="key-never"),
        pytest.param("which", set(), id="other-key-never"),
        pytest.param("deep", set(), id="nested-key-never"),
        pytest.param("%", {"pct"}, id="percent-alone"),
        pytest.param("_", {"snake"}, id="underscore-alone"),
    ],
)
def test_a_search_finds_values_with_wildcards_taken_literally(
    found: dict[str, set[str]], needle: str, expected: set[str]
) -> None:
    assert found[needle] == expected


def test_a_row_that_is_not_json_is_searched_as_text(svc: AuditService, db_path: Path) -> None:
    """Hand-edited or very old rows: the raw text is one value, wildcards still literal."""

    @audit_tool_sync(name="tool", service=svc)
    def tool(x: str) -> None:
        return None

    tool(x="seed")
    svc.flush()
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_logs_no_update")
        conn.executemany(
            "INSERT INTO audit_logs (timestamp, tool_name, parameters, status) "
            "VALUES ('2026-01-01T00:00:00.000000+00:00', ?, ?, 'SUCCESS')",
            [("raw", "not json: cost_center"), ("raw_miss", "not json: costXcenter")],
        )
    got = svc.get_logs(parameter_value="t_c", limit=100)
    assert [e.tool_name for e in got] == ["raw"]


NEEDLES = [
    "922337203685477580",
    "rue",
    "eu-cent",
    "t_c",
    "0% ",
    "r\\f",
    "EU-WEST",
    "471",
    "47.1",
    "true",
    "value",
    "deep",
    "%",
    "_",
    "1",
]


def test_the_dashboards_python_match_agrees_with_the_store(svc: AuditService) -> None:
    """Live rows in the dashboard are filtered in Python: same needle, same entries."""
    from finops_audit.storage._value_match import value_matches

    @audit_tool_sync(name="tool", service=svc)
    def tool(which: str, value: object) -> None:
        return None

    for which, value in {
        **VALUES,
        "zone": "EU-Central",
        "big": 2**64,
        "top": 2**63 - 1,  # the int64 bounds: stored as integers, matched by digits
        "over": 2**63,  # beyond int64: SQLite reads a real, never matched
        "bottom": -(2**63),
        "under": -(2**63) - 1,
        "neg": -4711,
        "none": None,
    }.items():
        tool(which=f"#{which}", value=value)
    svc.flush()
    entries = svc.get_logs(limit=100)
    for needle in NEEDLES:
        stored = {e.id for e in svc.get_logs(parameter_value=needle, limit=100)}
        in_python = {e.id for e in entries if value_matches(e.parameters, needle)}
        assert in_python == stored, needle


#: Values whose JSON text does not hold them verbatim (escaped quotes and
#: backslashes, control characters), each with a needle that must find it.
ESCAPED = {
    "quotes": ('say x""y', '""'),
    "quote-slash": ('a"\\b', '"\\'),
    "tab": ("col1\tcol2", "1\tc"),
    "newline": ("line1\nline2", "1\nl"),
    "accent": ("Café Zürich", "é z"),
}


@pytest.mark.parametrize("which", sorted(ESCAPED))
def test_a_needle_the_json_text_escapes_still_finds_its_value(
    svc: AuditService, which: str
) -> None:
    """The text prefilter must never hide a value stored escaped (``\\"``, ``\\t``)."""
    from finops_audit.storage._value_match import value_matches

    @audit_tool_sync(name="tool", service=svc)
    def tool(which: str, value: object) -> None:
        return None

    for name, (value, _) in ESCAPED.items():
        tool(which=name, value=value)
    svc.flush()
    needle = ESCAPED[which][1]
    got = [e.parameters["which"] for e in svc.get_logs(parameter_value=needle, limit=100)]
    assert got == [which]
    assert [
        e.parameters["which"]
        for e in svc.get_logs(limit=100)
        if value_matches(e.parameters, needle)
    ] == [which]


def test_the_text_prefilter_is_used_exactly_for_needles_every_encoder_writes_verbatim() -> None:
    """Printable ASCII but ``"`` and ``\\``: such a needle is in the JSON text as it is.

    Any other character may be escaped by an encoder (``\\"``, ``\\\\``, ``\\u00e9``,
    ``\\t``), so a ``LIKE`` over the text could miss it: those needles go to the
    JSON walk alone. Narrower would only be slower; wider would lose rows.
    """
    from finops_audit.storage._value_match import plain, sqlite_value_match

    verbatim = {chr(c) for c in range(0x20, 0x7F)} - {'"', "\\"}
    for code in range(0x100):
        ch = chr(code)
        assert plain(ch) is (ch in verbatim), repr(ch)
        assert plain(f"ab{ch}yz") is (ch in verbatim), repr(ch)
    assert plain("") is True
    assert plain("eu-west-1 ~ X") is True
    for needle in ("€", "\u2028", '""', "\\\\"):
        assert plain(needle) is False
    # the prefilter adds one LIKE over the stored text ahead of the walk, no more
    sql, params = sqlite_value_match("eu-west")
    assert sql.startswith("(parameters LIKE ? ESCAPE '\\' AND ")
    assert params == ["%eu-west%"] * 3
    sql, params = sqlite_value_match('a"b')
    assert sql.startswith("(CASE WHEN json_valid(parameters)")
    assert params == ['%a"b%'] * 2
