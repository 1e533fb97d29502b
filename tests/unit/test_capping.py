"""A huge value never erases its neighbours, and the stored document never exceeds the cap.

:func:`shrink` is attacked with documents whose encoding is much bigger than
their character count (backslashes, control characters, quotes, emoji), with
many medium values, many keys, long lists and deep nesting, and with a sweep
of caps over a secret that a cut goes through. Then the same through a real
service: the raw stored column is measured in bytes.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from finops_audit import AuditService, audit_tool_sync
from finops_audit._capping import cap_text, shrink
from finops_audit.redaction import Redactor

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BIG = 70_000


def stored(doc: Any, limit: int, trim: bool = False) -> tuple[bytes, Any]:
    out = shrink(json.loads(json.dumps(doc)), limit, trim=trim)
    assert len(out) <= limit, (len(out), limit)
    return out, json.loads(out)


@pytest.mark.parametrize(
    "filler",
    ["\\", '"', "\x00", "\x1f", "🚀", "é", "\u2028", "y", "</script>"],
    ids=["backslash", "quote", "nul", "control", "emoji", "accent", "line-sep", "plain", "html"],
)
def test_a_huge_value_is_cut_and_its_neighbours_kept(filler: str) -> None:
    doc = {"blob": filler * BIG, "region": "eu-west-1", "count": 3, "tags": ["a", "b"]}
    raw, got = stored(doc, 8192)
    assert got["region"] == "eu-west-1"
    assert got["count"] == 3
    assert got["tags"] == ["a", "b"]
    blob = got["blob"]
    assert blob["$truncated"] is True
    assert blob["original_bytes"] == len((filler * BIG).encode())
    assert set(blob["preview"]) <= set(filler)
    assert len(raw) > 8192 // 2  # the room is used, not thrown away


def test_the_largest_values_are_cut_to_one_common_size() -> None:
    doc = {"a": "a" * 100_000, "b": "b" * 50_000, "c": "c" * 3000, "small": "s" * 90}
    _, got = stored(doc, 16_384)
    assert got["small"] == "s" * 90
    assert got["c"] == "c" * 3000  # below the level: kept whole
    sizes = [len(got[k]["preview"]) for k in ("a", "b")]
    assert max(sizes) - min(sizes) < 200  # one water level, not first come first cut
    assert min(sizes) > 5000


def test_nested_values_and_list_items_are_cut_in_place() -> None:
    doc = {"batches": [{"id": i, "body": "z" * 20_000} for i in range(5)], "region": "us"}
    _, got = stored(doc, 8192)
    assert got["region"] == "us"
    assert [b["id"] for b in got["batches"]] == list(range(5))
    assert all(b["body"]["$truncated"] is True for b in got["batches"])


def test_many_small_values_fall_back_to_whole_top_level_values() -> None:
    doc = {"ids": list(range(50_000)), "region": "eu-west-1"}
    _, got = stored(doc, 4096)
    assert got["region"] == "eu-west-1"
    assert got["ids"]["$truncated"] is True
    assert got["ids"]["preview"].startswith("[0,1,2,")


def test_too_many_keys_become_one_marker_within_the_cap() -> None:
    doc = {f"key{i}": i for i in range(20_000)}
    _, got = stored(doc, 2048)
    assert got["$truncated"] is True
    assert got["preview"].startswith('{"key0":0')


def test_a_document_that_is_one_big_string_or_deep_nesting() -> None:
    stored("q" * 100_000, 1024)
    deep: Any = "w" * 100_000
    for _ in range(300):
        deep = [deep]
    stored({"deep": deep, "k": 1}, 1024)


def test_random_documents_never_exceed_the_cap() -> None:
    rng = random.Random(1234)
    alphabet = ["a", "\\", '"', "\x01", "é", "🚀", " ", "\n"]

    def value(depth: int) -> Any:
        kind = rng.randrange(6 if depth < 4 else 3)
        if kind == 0:
            return "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 50, 500, 5000])))
        if kind == 1:
            return rng.randrange(-(10**12), 10**12)
        if kind == 2:
            return None
        if kind == 3:
            return [value(depth + 1) for _ in range(rng.randrange(8))]
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(8))}

    for _ in range(300):
        doc = {f"p{i}": value(0) for i in range(rng.randrange(1, 10))}
        limit = rng.choice([256, 1000, 4096, 20_000])
        _, got = stored(doc, limit)
        if "$truncated" not in got:  # cut value by value: every key is kept
            assert set(got) == set(doc)


@pytest.mark.parametrize("limit", range(300, 400, 3))
def test_a_caller_side_cut_never_leaves_part_of_a_token(limit: int) -> None:
    """The queue bound cuts before redaction: a secret the cut goes through is dropped."""
    doc = {"note": "rotated to " + AWS_SECRET + " today " + "n" * 5000, "region": "eu"}
    _, got = stored(doc, limit, trim=True)
    preview = got["note"]["preview"]
    redacted = Redactor().message(preview) or ""
    for i in range(len(AWS_SECRET) - 6):
        assert AWS_SECRET[i : i + 6] not in redacted, (limit, preview)


def test_cap_text() -> None:
    assert cap_text("short", 256) == "short"
    for filler in ("x", "é", "🚀", "\\"):
        text = "boom " + filler * 100_000
        out = cap_text(text, 1000)
        assert len(out.encode()) <= 1000
        assert out.startswith("boom ")
        assert out.endswith(f"… [truncated, {len(text.encode())} bytes]")
    # a caller's cut keeps the original size and drops a token it went through
    first = cap_text("key " + AWS_SECRET + " tail" * 1000, 50, trim=True)
    assert first == "key … [truncated, 5044 bytes]"
    raised = "boom " + "x" * 1_000_000
    at_caller = cap_text(raised, 5000, trim=True)
    at_writer = cap_text(at_caller, 1000)
    assert len(at_writer.encode()) <= 1000
    assert at_writer.startswith("boom ")
    assert at_writer.endswith(f"x… [truncated, {len(raised)} bytes]")


def test_the_stored_column_stays_within_the_cap(tmp_path: Path) -> None:
    cap = 4096
    with AuditService(tmp_path / "audit.db", max_param_bytes=cap, max_error_bytes=512) as svc:

        @audit_tool_sync(service=svc)
        def upload(blob: str, region: str) -> None:
            raise ValueError("\\" * 100_000)

        for blob in ("\\" * 130_000, "\x00" * 50_000, "🚀" * 40_000, "a" * 10_000_000):
            with pytest.raises(ValueError):
                upload(blob, region="eu-west-1")
        assert len(svc.get_logs(parameter_value="eu-west-1")) == 4
    conn = sqlite3.connect(tmp_path / "audit.db")
    try:
        rows = conn.execute(
            "SELECT length(CAST(parameters AS BLOB)), length(CAST(error_message AS BLOB)) "
            "FROM audit_logs"
        ).fetchall()
    finally:
        conn.close()
    assert len(rows) == 4
    for params_bytes, error_bytes in rows:
        assert params_bytes <= cap
        assert error_bytes <= 512


def test_the_cap_applies_after_pseudonyms(tmp_path: Path) -> None:
    cap = 2048
    ids = [f"{100000000000 + i}" for i in range(120)]  # 12 digits: an AWS account id each
    key = "an-hmac-key-of-at-least-32-bytes-0123456789"
    with AuditService(tmp_path / "audit.db", max_param_bytes=cap, hmac_key=key) as svc:

        @audit_tool_sync(service=svc)
        def accounts(account_ids: list[str], region: str) -> int:
            return len(account_ids)

        accounts(ids, region="eu-west-1")  # 1.9 KB as given; 4.7 KB as pseudonyms
        [entry] = svc.get_logs(parameter_value="eu-west-1")
    assert entry.parameters["account_ids"]["$truncated"] is True
    assert "hmac:" in entry.parameters["account_ids"]["preview"]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    for account in ids:
        assert account.encode() not in raw


@pytest.mark.parametrize("big", [2**70, -(2**70)], ids=["huge", "huge-negative"])
def test_integers_beyond_64_bits_stay_exact_and_the_text_compact_utf8(big: int) -> None:
    """orjson refuses such integers; the fallback must still write what every row holds."""
    doc = {"big": big, "city": "Zürich ☃", "blob": "x" * 5000, "n": [1, 2]}
    out = shrink(doc, 1000)
    assert len(out) <= 1000
    assert f'"big":{big}'.encode() in out  # exact, not a float
    assert '"city":"Zürich ☃"'.encode() in out  # UTF-8, not \\u escapes
    assert b'"n":[1,2]' in out  # compact separators
    assert b": " not in out
    assert b", " not in out
    assert json.loads(out)["big"] == big
