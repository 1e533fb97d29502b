"""Each line of an anchor file is checked field by field before it is trusted.

Why: without ``AUDIT_HMAC_KEY`` anyone can sign an anchor line, so the shape
of a line is all that stands between a crafted line and ``verify``: a line of
the wrong type, a negative id or count, an unknown scheme, must be refused by
name (file and line), never crash ``verify`` or be taken as a real anchor.
With a key, the messages must tell the operator which variable to check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from finops_audit import AuditService, audit_tool_sync
from finops_audit._anchors import ANCHOR_FORMAT
from finops_audit._chain import CURRENT_SCHEME, Chainer
from finops_audit.maintenance import VerifyReport

from ._util import execute

KEY = "anchor-lines-test-key-0123456789abcdef"
STAMP = "2026-01-02T03:04:05.000006Z"


def trail(db_path: Path, anchors: Path, key: str | None = None, calls: int = 4) -> None:
    with AuditService(db_path, hmac_key=key, anchor_path=anchors) as service:

        @audit_tool_sync(service=service)
        def pay(to: str) -> str:
            return to

        for i in range(calls):
            pay(f"acct-{i}")


def verify(db_path: Path, anchors: Path, key: str | None = None) -> VerifyReport:
    with AuditService(db_path, hmac_key=key) as service:
        return service.verify(anchors=anchors)


def signed_line(chainer: Chainer, **fields: Any) -> bytes:
    """A line as the writer makes it, with ``fields`` replaced, signed over what it holds."""
    record: dict[str, Any] = {
        "anchor": ANCHOR_FORMAT,
        "scheme": CURRENT_SCHEME,
        "db": "trail.db",
        "last_id": 0,
        "last_hash": "0" * 64,
        "rows": 0,
        "time": STAMP,
        **fields,
    }
    order = ("anchor", "scheme", "db", "last_id", "last_hash", "rows", "time")
    record["sig"] = chainer.anchor_signature([record[k] for k in order])
    return orjson.dumps(record) + b"\n"


def test_an_anchor_of_an_empty_trail_is_a_valid_line(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    trail(db_path, anchors)
    anchors.write_bytes(signed_line(Chainer(None), last_id=0, rows=0) + anchors.read_bytes())
    report = verify(db_path, anchors)
    assert (report.ok, report.anchors_checked) == (True, 2)


BAD_SHAPES: dict[str, bytes] = {
    "a-json-list": b"[1, 2, 3]\n",
    "a-json-string": b'"anchor"\n',
    "format-2": signed_line(Chainer(None), anchor=2),
    "negative-id": signed_line(Chainer(None), last_id=-1, rows=0),
    "negative-count": signed_line(Chainer(None), last_id=0, rows=-1),
    "db-not-text": signed_line(Chainer(None), db=5),
    "hash-not-text": signed_line(Chainer(None), last_hash=5),
    "time-not-text": signed_line(Chainer(None), time=5),
    "id-a-boolean": signed_line(Chainer(None), last_id=True),
    "id-a-fraction": signed_line(Chainer(None), last_id=1.0),
    "count-a-boolean": signed_line(Chainer(None), rows=False),
    "scheme-as-text": signed_line(Chainer(None), scheme="2"),
    "signature-not-text": orjson.dumps({**orjson.loads(signed_line(Chainer(None))), "sig": 7})
    + b"\n",
    "field-missing": orjson.dumps(
        {k: v for k, v in orjson.loads(signed_line(Chainer(None))).items() if k != "rows"}
    )
    + b"\n",
}


@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
def test_a_line_of_the_wrong_shape_is_refused_by_file_and_line(
    db_path: Path, tmp_path: Path, case: str
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    trail(db_path, anchors)
    anchors.write_bytes(anchors.read_bytes() + BAD_SHAPES[case])
    report = verify(db_path, anchors)
    assert (report.ok, report.rows_checked) == (False, 0)
    assert report.problem == (
        f"anchor file {anchors} line 2: not an anchor record (missing or wrong fields)"
    )


def test_an_unknown_anchor_scheme_is_named(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    trail(db_path, anchors)
    anchors.write_bytes(anchors.read_bytes() + signed_line(Chainer(None), scheme=1))
    report = verify(db_path, anchors)
    assert not report.ok
    assert report.problem == f"anchor file {anchors} line 2: unknown anchor scheme 1"


def test_an_unkeyed_line_in_a_keyed_file_names_the_key_variable(
    db_path: Path, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    trail(db_path, anchors, key=KEY)
    anchors.write_bytes(anchors.read_bytes() + signed_line(Chainer(None)))
    report = verify(db_path, anchors, key=KEY)
    assert not report.ok
    assert report.problem == (
        f"anchor file {anchors} line 2: the anchor is not signed with the key "
        "(forged, or written without AUDIT_HMAC_KEY)"
    )


def test_a_wrong_key_is_named_as_a_possible_cause(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    trail(db_path, anchors, key=KEY)
    other = Chainer(b"some-other-key-of-enough-length-0123456789")
    anchors.write_bytes(signed_line(other) + anchors.read_bytes())
    report = verify(db_path, anchors, key=KEY)
    assert not report.ok
    assert report.problem == (
        f"anchor file {anchors} line 1: the signature does not match: the line was "
        "altered or forged (or the key is wrong: check AUDIT_HMAC_KEY)"
    )


def test_an_unreadable_anchor_file_is_a_failed_verify_naming_it(
    db_path: Path, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    trail(db_path, anchors)
    missing = tmp_path / "gone" / "anchors.jsonl"
    report = verify(db_path, missing)
    assert not report.ok
    assert (report.problem or "").startswith(f"cannot read anchor file {missing}: ")
    assert "No such file" in (report.problem or "")


def test_a_contradicted_anchor_is_reported_with_its_line_and_time(
    db_path: Path, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    trail(db_path, anchors, calls=3)
    trail(db_path, anchors, calls=3)  # a second session: line 2 anchors row 6
    [_, second] = anchors.read_bytes().splitlines()
    stamp = orjson.loads(second)["time"]
    execute(
        db_path,
        "DELETE FROM audit_logs WHERE id > 4",
        "UPDATE sqlite_sequence SET seq = 4 WHERE name = 'audit_logs'",
    )
    report = verify(db_path, anchors)
    assert (report.ok, report.first_bad_id) == (False, 5)
    assert report.problem == (
        f"anchored row 6 is gone (anchor {anchors} line 2, {stamp}): rows 5..6 "
        "(at least) were deleted"
    )


def test_an_anchor_of_an_empty_trail_does_not_end_the_check(db_path: Path, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    trail(db_path, anchors)
    anchors.write_bytes(signed_line(Chainer(None)) + anchors.read_bytes())
    execute(
        db_path,
        "DELETE FROM audit_logs WHERE id > 2",
        "UPDATE sqlite_sequence SET seq = 2 WHERE name = 'audit_logs'",
    )
    report = verify(db_path, anchors)
    assert (report.ok, report.first_bad_id) == (False, 3)
    assert f"anchor {anchors} line 2" in (report.problem or "")
