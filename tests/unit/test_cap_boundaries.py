"""The size caps at their edges: every byte of room used, nothing cut that fits, no token split.

``test_capping.py`` attacks the caps with hostile documents; this file pins the
boundaries a careless change would move without any of those noticing: a text
of exactly the cap, a value of exactly the "small" size, a cap one byte above
an empty marker, a value 200 levels deep, a document cut twice (caller, then
writer), a cut that lands just before or just after a word, lone surrogates,
integers beyond 64 bits read back through a real service.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from finops_audit import AuditService, audit_tool_sync
from finops_audit._capping import TRUNCATED_KEY, cap_text, dumps, loads, shrink

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN_CHAR = re.compile(r"[A-Za-z0-9\-._~+/=]")


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def cut(doc: Any, limit: int, *, trim: bool = False) -> tuple[bytes, Any]:
    out = shrink(json.loads(json.dumps(doc)), limit, trim=trim)
    assert len(out) <= limit, (len(out), limit)
    return out, json.loads(out)


def empty_marker_size(original: int) -> int:
    return len(compact({TRUNCATED_KEY: True, "original_bytes": original, "preview": ""}))


# -- cap_text ---------------------------------------------------------------------------


@pytest.mark.parametrize("filler", ["x", "é", "🚀"])
def test_an_error_message_of_exactly_the_cap_is_kept_whole(filler: str) -> None:
    text = filler * (1000 // len(filler.encode()))
    assert len(text.encode()) == 1000
    assert cap_text(text, 1000) == text
    assert cap_text(text + "y", 1000) != text + "y"


def test_a_cap_smaller_than_the_marker_keeps_no_text() -> None:
    """Not even a first byte: the marker alone says what was there."""
    assert cap_text("boom, a long failure", 3) == "… [truncated, 20 bytes]"


def test_an_error_message_with_lone_surrogates_is_cut_without_raising() -> None:
    """Broken text from a tool (``surrogateescape`` file names) must still be stored."""
    text = "open failed: /tmp/\udcff\udcfe" + "x" * 5000
    out = cap_text(text, 200)
    assert out.startswith("open failed: /tmp/")
    assert out.endswith(f"… [truncated, {len(text.encode('utf-8', 'surrogatepass'))} bytes]")
    assert len(out.encode("utf-8", "surrogatepass")) <= 200


@pytest.mark.parametrize(
    ("limit", "kept"),
    [
        (28, ""),  # the cut goes through "key": a token, dropped
        (29, ""),
        (30, "key"),  # the cut ends the word exactly: "key" is whole, kept
        (31, "key "),  # the cut ends after the space, before the secret: kept
        (40, "key "),  # the cut goes through the secret: its start dropped
        (70, "key "),
    ],
)
def test_a_caller_side_cut_keeps_whole_words_and_drops_a_cut_token(limit: int, kept: str) -> None:
    text = "key " + AWS_SECRET + " tail" * 1000
    assert cap_text(text, limit, trim=True) == kept + "… [truncated, 5044 bytes]"


def test_a_cut_token_is_dropped_also_after_a_leading_punctuation_mark() -> None:
    text = "(" + AWS_SECRET + ") tail" * 1000
    out = cap_text(text, 50, trim=True)
    assert out == f"(… [truncated, {len(text)} bytes]"


def test_a_cut_through_a_very_long_token_drops_at_most_its_last_4096_characters() -> None:
    """A longer run is no token a pattern finds whole: the rest of it is kept."""
    text = "key " + "A" * 10_000
    suffix = f"… [truncated, {len(text)} bytes]"
    room = 6000 - len(suffix.encode())
    assert cap_text(text, 6000, trim=True) == "key " + "A" * (room - 4 - 4096) + suffix
    assert cap_text(text, 6000) == "key " + "A" * (room - 4) + suffix


# -- dumps / loads ----------------------------------------------------------------------


def test_lone_surrogates_are_encoded_not_raised() -> None:
    """orjson refuses them; the fallback writes them escaped, and reads back the same."""
    out = dumps({"path": "a\udc80b"})
    assert out == b'{"path":"a\\udc80b"}'
    assert json.loads(out) == {"path": "a\udc80b"}


@pytest.mark.parametrize("big", [2**64, 2**70, -(2**70), 10**30])
def test_integers_beyond_64_bits_read_back_exact(big: int) -> None:
    raw = b'{"n":%d,"m":[1,%d]}' % (big, big)
    assert loads(raw) == {"n": big, "m": [1, big]}
    assert isinstance(loads(raw)["n"], int)


def test_a_huge_integer_next_to_a_capped_value_is_stored_exact(tmp_path: Path) -> None:
    """The writer re-reads an over-cap document to cut it: the integer must not become a float."""
    big = 2**70 + 1
    with AuditService(tmp_path / "audit.db", max_param_bytes=1024) as svc:

        @audit_tool_sync(service=svc)
        def transfer(amount: int, memo: str) -> None:
            return None

        transfer(big, memo="m" * 50_000)
        svc.flush()
        [entry] = svc.get_logs()
    assert entry.parameters["amount"] == big
    assert entry.parameters["memo"][TRUNCATED_KEY] is True
    with closing(sqlite3.connect(tmp_path / "audit.db")) as conn:
        [(text,)] = conn.execute("SELECT parameters FROM audit_logs").fetchall()
    assert f'"amount":{big}' in text


# -- shrink: the room is used -------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [list(range(3000)), "x" * 5000],
    ids=["list-of-numbers", "one-string"],
)
def test_a_whole_document_marker_fills_the_cap_to_the_last_byte(doc: Any) -> None:
    """One more character of preview would not fit: no byte of room is thrown away."""
    text = compact(doc)
    full = len(text.encode())
    floor = empty_marker_size(full)
    for limit in range(floor, floor + 40):
        _, got = cut(doc, limit)
        assert got[TRUNCATED_KEY] is True
        assert got["original_bytes"] == full
        preview = got["preview"]
        assert text.startswith(preview)
        longer = dict(got, preview=text[: len(preview) + 1])
        assert len(compact(longer).encode()) > limit, (limit, preview)


@pytest.mark.parametrize(
    "doc",
    [{f"key{i}": i for i in range(2000)}, {f"k{i}": 'say "hi" \\ ok' for i in range(500)}],
    ids=["many-keys", "quotes-and-backslashes"],
)
def test_a_whole_document_marker_of_escaped_text_wastes_at_most_3_bytes(doc: Any) -> None:
    text = compact(doc)
    floor = empty_marker_size(len(text.encode()))
    for limit in range(floor, floor + 300):
        raw, got = cut(doc, limit)
        assert text.startswith(got["preview"])
        assert len(raw) >= limit - 3, limit


def test_two_large_values_share_the_room_and_use_all_of_it() -> None:
    doc = {"a": "a" * 10_000, "b": "b" * 9_000, "region": "eu"}
    raw, got = cut(doc, 14_000)
    assert got["region"] == "eu"
    sizes = [len(got[k]["preview"]) for k in ("a", "b")]
    assert max(sizes) - min(sizes) < 50  # one common level for both
    assert len(raw) > 14_000 - 300  # not cut deeper than needed


def test_a_top_level_value_is_cut_just_enough_and_its_neighbour_kept() -> None:
    """Many small values: the largest top-level value becomes a marker sized to fit exactly."""
    ids, more = list(range(50_000)), list(range(300))
    raw, got = cut({"ids": ids, "more": more}, 8192)
    assert got["more"] == more
    assert got["ids"][TRUNCATED_KEY] is True
    assert got["ids"]["original_bytes"] == len(compact(ids))
    assert got["ids"]["preview"] == compact(ids)[: len(got["ids"]["preview"])]
    assert len(raw) == 8192


def test_a_value_of_the_small_size_is_never_cut() -> None:
    """Values up to 96 encoded bytes are kept whole: too many of them make one marker."""
    small = [1000 + i for i in range(19)]
    assert len(compact(small)) == 96
    doc = {"small": small, **{f"k{i}": i for i in range(5)}}
    limit = len(compact(doc)) - 10
    _, got = cut(doc, limit)
    assert set(got) == {TRUNCATED_KEY, "original_bytes", "preview"}
    assert got["original_bytes"] == len(compact(doc))
    # one byte more and it is the value that goes, its neighbours stay
    bigger = {"small": [*small[:-1], 10_000], **{f"k{i}": i for i in range(5)}}
    _, got = cut(bigger, limit)
    assert got["small"][TRUNCATED_KEY] is True
    assert [got[f"k{i}"] for i in range(5)] == list(range(5))


@pytest.mark.parametrize("depth", [199, 200])
def test_a_value_200_levels_deep_is_still_cut_in_place(depth: int) -> None:
    deep: Any = "w" * 5000
    for _ in range(depth):
        deep = [deep]
    _, got = cut({"deep": deep, "k": 1}, 1024)
    assert got["k"] == 1
    inner = got["deep"]
    for _ in range(depth):
        assert isinstance(inner, list)
        inner = inner[0]
    assert inner[TRUNCATED_KEY] is True
    assert inner["original_bytes"] == 5000


def test_a_value_deeper_than_200_levels_goes_with_its_top_level_value() -> None:
    deep: Any = "w" * 5000
    for _ in range(201):
        deep = [deep]
    _, got = cut({"deep": deep, "k": 1}, 1024)
    assert got["k"] == 1
    assert got["deep"][TRUNCATED_KEY] is True
    assert got["deep"]["preview"].startswith("[[[[")


# -- shrink: cut twice, and the user's own "preview" keys ---------------------------------


def test_a_document_cut_by_the_caller_is_cut_again_in_the_same_marker() -> None:
    """The writer shortens the caller's preview; it never wraps the marker in another."""
    _, first = cut({"blob": "z" * 100_000, "region": "eu"}, 20_000, trim=True)
    assert first["blob"]["original_bytes"] == 100_000
    _, second = cut(first, 4096)
    assert second["region"] == "eu"
    marker = second["blob"]
    assert marker[TRUNCATED_KEY] is True
    assert marker["original_bytes"] == 100_000  # the size the caller saw, not the preview's
    assert isinstance(marker["preview"], str)
    assert 3000 < len(marker["preview"]) < 4096
    assert set("".join(marker["preview"])) == {"z"}


def test_a_users_own_preview_key_is_cut_like_any_value() -> None:
    """Only a real marker (``"$truncated": true``) is treated as one."""
    doc = {"page": {"preview": "p" * 10_000, "title": "t"}, "region": "eu"}
    _, got = cut(doc, 2000)
    assert got["region"] == "eu"
    assert got["page"]["title"] == "t"
    assert got["page"]["preview"][TRUNCATED_KEY] is True
    assert got["page"]["preview"]["original_bytes"] == 10_000
    fake = {"note": {TRUNCATED_KEY: "yes", "preview": "q" * 10_000}, "region": "eu"}
    _, got = cut(fake, 2000)
    assert got["note"]["preview"][TRUNCATED_KEY] is True


# -- shrink with trim: a caller-side cut never ends inside a token -----------------------


def ends_inside_a_token(preview: str, text: str) -> bool:
    n = len(preview)
    return (
        0 < n < len(text)
        and TOKEN_CHAR.match(preview[-1]) is not None
        and TOKEN_CHAR.match(text[n]) is not None
    )


@pytest.mark.parametrize("limit", range(150, 260, 5))
def test_a_caller_side_cut_of_a_value_never_keeps_part_of_a_secret(limit: int) -> None:
    note = "rotated to " + AWS_SECRET + " today " + "n" * 5000
    _, got = cut({"note": note, "region": "eu"}, limit, trim=True)
    preview = got["note"]["preview"]
    assert note.startswith(preview)
    assert not ends_inside_a_token(preview, note), preview
    assert AWS_SECRET[:4] not in preview or AWS_SECRET in preview


@pytest.mark.parametrize("limit", range(600, 700, 7))
def test_a_caller_side_cut_of_a_top_level_value_never_keeps_part_of_a_secret(limit: int) -> None:
    keys = [AWS_SECRET[::-1] + str(i) for i in range(60)]  # many small values, each a token
    _, got = cut({"keys": keys, "region": "eu"}, limit, trim=True)
    assert got["region"] == "eu"
    preview = got["keys"]["preview"]
    text = compact(keys)
    assert text.startswith(preview)
    assert not ends_inside_a_token(preview, text), preview


@pytest.mark.parametrize("limit", range(120, 200, 9))
def test_a_caller_side_cut_of_the_whole_document_never_keeps_part_of_a_secret(
    limit: int,
) -> None:
    doc = {f"k{i}": AWS_SECRET for i in range(40)}
    _, got = cut(doc, limit, trim=True)
    preview = got["preview"]
    text = compact(doc)
    assert text.startswith(preview)
    assert not ends_inside_a_token(preview, text), preview


def test_a_document_of_exactly_the_cap_is_stored_unchanged() -> None:
    doc = {"blob": "b" * 5000, "region": "eu-west-1"}
    limit = len(compact(doc))
    assert shrink(json.loads(json.dumps(doc)), limit) == compact(doc).encode()
    assert len(shrink(json.loads(json.dumps(doc)), limit - 1)) <= limit - 1


def test_a_whole_document_marker_reports_the_size_the_caller_saw() -> None:
    """The writer re-cuts a document the caller cut: the marker keeps the caller's size."""
    doc = {f"key{i}": i for i in range(2000)}
    _, got = cut(doc, 1024)
    assert got["original_bytes"] == len(compact(doc))
    out = shrink(json.loads(json.dumps(doc)), 1024, original=123_456)
    assert json.loads(out)["original_bytes"] == 123_456


@pytest.mark.parametrize("limit", range(150, 260, 5))
def test_a_caller_side_cut_of_a_marker_shaped_value_never_keeps_part_of_a_secret(
    limit: int,
) -> None:
    """A tool handed an earlier audit entry: its preview is cut like any other text."""
    note = "rotated to " + AWS_SECRET + " today " + "n" * 5000
    doc = {"earlier": {TRUNCATED_KEY: True, "original_bytes": 99_999, "preview": note}}
    _, got = cut(doc, limit, trim=True)
    preview = got["earlier"]["preview"]
    assert note.startswith(preview)
    assert not ends_inside_a_token(preview, note), preview


def test_an_error_cut_by_the_caller_and_again_by_the_writer_reports_the_original_size() -> None:
    """One marker, with the size of the message the tool raised, not of the caller's cut."""
    raised = "boom " + "no such key; " * 80_000
    at_caller = cap_text(raised, 5000, trim=True)
    assert len(at_caller.encode()) > 4000
    at_writer = cap_text(at_caller, 1000)
    assert len(at_writer.encode()) <= 1000
    assert at_writer.startswith("boom no such key; ")
    assert at_writer.endswith(f"… [truncated, {len(raised)} bytes]")
    assert at_writer.count("truncated") == 1


def test_a_string_of_the_small_size_is_never_cut_one_byte_more_is() -> None:
    """96 encoded bytes (94 characters and the quotes) stay whole next to a cut value."""
    _, got = cut({"note": "n" * 94, "big": "b" * 10_000}, 200)
    assert got["note"] == "n" * 94
    assert got["big"][TRUNCATED_KEY] is True
    _, got = cut({"note": "n" * 95, "big": "b" * 10_000}, 200)
    assert got["note"][TRUNCATED_KEY] is True
