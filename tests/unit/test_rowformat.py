"""``RowFormatter.rows`` stores exactly what its per-field methods would, faster.

Why: the batch loop inlines the timestamp, the caps and the redaction of every
field to save per-row Python work; the hash chain covers the stored text, so
one differing byte would be a broken chain or a leaked secret. The oracle is
the composition the loop replaced: ``Redactor.entries`` and ``callers`` for the
batch, then ``timestamp``, ``parameters`` and ``error`` per row.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from finops_audit._rowformat import RowFormatter
from finops_audit.redaction import Redactor

SECOND = 1_767_225_599  # 2025-12-31T23:59:59Z: a batch that crosses a second and a year
CALLER = ("alice", "claude", "1.0", "sess-0123456789abcdef", "7", None, "ab" * 16, "cd" * 8)


def _entry(rng: random.Random, i: int) -> tuple[Any, ...]:
    wall = SECOND * 1_000_000_000 + rng.choice([0, 999_999_999, 1_000_000_000, i * 7_919_111])
    params: dict[str, Any] = {"region": "eu-west-1", "n": i}
    if rng.random() < 0.3:
        params["password"] = "hunter2hunter2"
    if rng.random() < 0.2:
        params["blob"] = "x" * rng.choice([10, 600, 5000])  # over the 512-byte cap
    if rng.random() < 0.1:
        params["odd"] = "\udc80 lone surrogate"
    raw = (
        orjson.dumps(params, option=orjson.OPT_SERIALIZE_NUMPY)
        if "odd" not in params
        else (
            b'{"odd":"\xed\xb2\x80","n":1}'  # invalid UTF-8: stored with backslash escapes
        )
    )
    error = rng.choice(
        [None, None, "ValueError: hunter2hunter2", "E: Bearer abcdefgh12345678", "E: " + "é" * 3000]
    )
    caller = None
    if rng.random() < 0.5:
        labels = rng.choice([None, {}, {"team": "finops", "api_key": "sk-live-123456"}])
        caller = (*CALLER, labels)
    status = rng.choice(["SUCCESS", "FAILURE"])
    return ("tool", wall, rng.randrange(10**9), raw, status, error, caller)


def _oracle(formatter: RowFormatter, redactor: Redactor | None, entries: list[Any]) -> list[Any]:
    if redactor is not None:
        cleaned = redactor.entries([(e[3], e[5]) for e in entries])
        callers = redactor.callers([e[6] for e in entries])
        entries = [
            (e[0], e[1], e[2], args, e[4], error, caller)
            for e, (args, error), caller in zip(entries, cleaned, callers, strict=True)
        ]
    rows = []
    for tool, wall, elapsed, args, status, error, caller in entries:
        row = (
            formatter.timestamp(wall),
            tool,
            formatter.parameters(args),
            status,
            formatter.error(error),
            elapsed / 1_000_000,
        )
        if caller is None:
            rows.append(row + (None,) * 9)
        else:
            labels = caller[8]
            rows.append(row + caller[:8] + (orjson.dumps(labels).decode() if labels else None,))
    return rows


@pytest.mark.parametrize("redacting", [True, False], ids=["redaction on", "redaction off"])
def test_rows_equal_the_per_field_composition(redacting: bool) -> None:
    rng = random.Random(12)
    redactor = Redactor() if redacting else None
    for size in (1, 2, 52, 300):
        entries = [_entry(rng, i) for i in range(size)]
        fast = RowFormatter(512, redactor, max_error_bytes=1024).rows(entries)
        slow = _oracle(RowFormatter(512, redactor, max_error_bytes=1024), redactor, entries)
        assert fast == slow
        assert [type(v) for row in fast for v in row] == [type(v) for row in slow for v in row]


def test_a_batch_with_nothing_to_redact_is_formatted_as_it_came() -> None:
    redactor = Redactor()
    formatter = RowFormatter(4096, redactor)
    entries = [("t", SECOND * 10**9, 5, b'{"region":"eu"}', "SUCCESS", None, None)] * 3
    assert formatter._redacted(redactor, entries) is entries


def test_a_secret_in_every_field_is_gone() -> None:
    redactor = Redactor()
    caller = (*CALLER[:3], "Bearer abcdefgh12345678", *CALLER[4:], {"password": "hunter2x"})
    entry = (
        "t",
        SECOND * 10**9,
        5,
        b'{"password":"hunter2hunter2"}',
        "FAILURE",
        "ValueError: hunter2hunter2",
        caller,
    )
    [row] = RowFormatter(4096, redactor).rows([entry])
    text = repr(row)
    assert "hunter2" not in text
    assert "abcdefgh12345678" not in text


def test_the_timestamp_is_iso_8601_in_utc_to_the_microsecond() -> None:
    walls = [SECOND * 10**9 + 999_999_999, (SECOND + 1) * 10**9 + 1_000]
    entries = [("t", wall, 5, b"{}", "SUCCESS", None, None) for wall in walls]
    stamps = [row[0] for row in RowFormatter(4096).rows(entries)]
    assert stamps == ["2025-12-31T23:59:59.999999+00:00", "2026-01-01T00:00:00.000001+00:00"]
    expected = datetime.fromtimestamp(walls[1] // 1000 / 10**6, timezone.utc).isoformat()
    assert stamps[1] == expected
