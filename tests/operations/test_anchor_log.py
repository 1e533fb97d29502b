"""The writer's side of anchors (``AnchorLog``): when one is due, what a line holds, failures.

Why: the writer calls it from its own thread, so a mistake here (an anchor
never due, a local-time stamp, a failing volume logged for every batch, a
lost retry) shows only much later, when ``verify --anchors`` is needed. The
log is driven here as the writer drives it, on real files.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from finops_audit._anchors import AnchorLog, read_anchors
from finops_audit._chain import Chainer

KEY = Chainer(b"anchor-log-test-key-0123456789abcdef")


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in a zone far from UTC (+05:30), as servers outside UTC do."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_an_anchor_is_due_only_once_the_interval_has_passed(tmp_path: Path) -> None:
    slow = AnchorLog(tmp_path / "a.jsonl", KEY, "trail.db", interval=3600)
    assert slow.pending is False
    assert slow.committed() is False  # an hour to go
    assert slow.pending is True  # but a commit is waiting for the next one (or close)
    now = AnchorLog(tmp_path / "b.jsonl", KEY, "trail.db", interval=0)
    assert now.committed() is True


def test_appending_restarts_the_interval_and_clears_the_pending_commit(tmp_path: Path) -> None:
    log = AnchorLog(tmp_path / "anchors.jsonl", KEY, "trail.db", interval=3600)
    log.committed()
    assert log.written == 0
    log.append(3, "h3", 3)
    assert (log.pending, log.written) == (False, 1)
    assert log.committed() is False  # the next anchor is an interval away again
    log.append(5, "h5", 5)
    assert log.written == 2
    assert [(a.line, a.last_id, a.last_hash, a.rows) for a in read_anchors(log.path, KEY)] == [
        (1, 3, "h3", 3),
        (2, 5, "h5", 5),
    ]


@pytest.mark.usefixtures("india_time")
def test_an_anchor_is_stamped_in_utc_whatever_the_local_zone(tmp_path: Path) -> None:
    log = AnchorLog(tmp_path / "anchors.jsonl", KEY, "trail.db", interval=60)
    before = datetime.now(timezone.utc)
    log.append(1, "h1", 1)
    after = datetime.now(timezone.utc)
    [line] = log.path.read_bytes().splitlines()
    stamp = orjson.loads(line)["time"]
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert before <= when <= after
    [anchor] = read_anchors(log.path, KEY)
    assert anchor.time == stamp


def test_the_anchor_folder_is_created_with_its_parents(tmp_path: Path) -> None:
    path = tmp_path / "volume" / "audit" / "anchors.jsonl"
    log = AnchorLog(path, KEY, "trail.db", interval=60)
    log.append(1, "h1", 1)
    assert log.written == 1
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(read_anchors(path, KEY)) == 1


def test_a_failing_append_is_logged_once_kept_pending_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the anchor folder should be")
    path = blocker / "anchors.jsonl"
    log = AnchorLog(path, KEY, "trail.db", interval=0)
    caplog.set_level(logging.WARNING, logger="finops_audit")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "anchor" in r.getMessage()]

    for last in (1, 2, 3):  # the writer retries at every interval
        assert log.committed() is True
        log.append(last, f"h{last}", last)
    assert (log.pending, log.written) == (True, 0)
    [message] = warnings()
    assert message.startswith(f"finops_audit could not append an anchor to {path}: ")
    assert "Errno" in message  # the reason, as the OS gave it
    blocker.unlink()  # the operator fixes the volume
    log.append(4, "h4", 4)
    assert (log.pending, log.written) == (False, 1)
    assert [a.last_id for a in read_anchors(path, KEY)] == [4]
    # once it worked, the same failure coming back is news again
    path.unlink()
    path.parent.rmdir()
    blocker.write_text("broken again")
    log.committed()
    log.append(5, "h5", 5)
    assert len(warnings()) == 2
    assert log.pending is True
