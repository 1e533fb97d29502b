"""An anchor's row count is checked against what the verified trail accounts for.

Why: the count is what catches rows removed from the middle of a trail that
was renumbered, and it must hold whichever part of the trail is purged:
none, some, or all of it. ``check_anchors`` gets the verified walk's summary
(rows present, the checkpoint they follow); these cases give it summaries an
intruder could produce, including counts no genuine anchor would carry.
"""

from __future__ import annotations

from finops_audit._anchors import Anchor, check_anchors


def anchor(last_id: int, rows: int) -> Anchor:
    return Anchor(line=2, last_id=last_id, last_hash=f"h{last_id}", rows=rows, time="t")


def test_a_count_above_what_the_trail_accounts_for_fails_when_all_is_purged() -> None:
    # rows 1..8 purged under a checkpoint through 8, nothing left
    assert check_anchors([anchor(8, 8)], "f", {}, None, None, 8, "h8") is None
    found = check_anchors([anchor(8, 9)], "f", {}, None, None, 8, "h8")
    assert found is not None
    assert found[0] == 8
    assert "holds 8 rows through id 8" in found[1]


def test_a_count_above_what_the_trail_accounts_for_fails_for_a_purged_anchor() -> None:
    # the anchored row 4 is purged (checkpoint through 6); rows 7..10 remain
    hashes: dict[int, str | None] = {}
    assert check_anchors([anchor(4, 4)], "f", hashes, 7, 10, 6, "h6") is None
    found = check_anchors([anchor(4, 5)], "f", hashes, 7, 10, 6, "h6")
    assert found is not None
    assert "holds 4 rows through id 4" in found[1]


def test_an_anchor_of_an_empty_trail_is_skipped_and_the_next_one_checked() -> None:
    empty = Anchor(line=1, last_id=0, last_hash="0" * 64, rows=0, time="t")
    assert check_anchors([empty], "f", {}, None, None, None, None) is None
    gone = check_anchors([empty, anchor(5, 5)], "f", {1: "h1"}, 1, 1, None, None)
    assert gone is not None
    assert gone[0] == 2
    assert "anchored row 5 is gone (anchor f line 2, t): rows 2..5 (at least)" in gone[1]
