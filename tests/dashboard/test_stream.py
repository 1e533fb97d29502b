"""The live tail over a real uvicorn server: SSE ids, resume, filters, heartbeat, other writers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from finops_audit import AuditService
from finops_audit.dashboard import _tail
from finops_audit.dashboard._filters import Filters

from .conftest import TOKEN, LiveServer, record

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Events:
    """Reads one SSE response event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()

    def next(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        for line in self._lines:
            if not line:
                if "event" in event or "data" in event:
                    if "data" in event:
                        event["json"] = json.loads(event["data"])
                    return event
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            event[key] = value[1:] if value.startswith(" ") else value
        raise AssertionError("stream ended")

    def entries(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` entry events (heartbeats and hello skipped)."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = self.next()
            if event.get("event") == "entry":
                assert event["id"] == str(event["json"]["id"])
                found.append(event["json"])
        return found


@contextmanager
def stream(server: LiveServer, query: str = "", **headers: str) -> Iterator[Events]:
    # The read timeout bounds every wait: an entry that never comes fails the test.
    with (
        httpx.Client(timeout=httpx.Timeout(30.0)) as client,
        client.stream(
            "GET", f"{server.url}/api/stream{query}", headers={**AUTH, **headers}
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        events = Events(response)
        hello = events.next()
        assert hello["event"] == "hello"
        yield events


def all_ids(svc: AuditService) -> list[int]:
    return sorted(e.id for e in svc.get_logs(limit=10_000))


def more_calls(svc: AuditService, n: int, tool: str = "live_tool", user: str = "carol") -> None:
    record(svc, [(tool, {"i": i}, False, {"user": user}) for i in range(n)])


def test_resume_from_last_event_id_misses_nothing(
    live_server: Callable[..., LiveServer], trail: AuditService
) -> None:
    server = live_server()
    ids = all_ids(trail)
    with stream(server, **{"Last-Event-ID": str(ids[9])}) as events:
        got = events.entries(len(ids) - 10)
    assert [e["id"] for e in got] == ids[10:]
    # The first connect may name its start in the URL; the header wins on reconnects.
    with stream(server, f"?after_id={ids[40]}") as events:
        assert [e["id"] for e in events.entries(5)] == ids[41:46]
    with stream(server, f"?after_id={ids[0]}", **{"Last-Event-ID": str(ids[44])}) as events:
        assert [e["id"] for e in events.entries(1)] == ids[45:]


def test_new_entries_arrive_live_and_a_reconnect_resumes(
    live_server: Callable[..., LiveServer], trail: AuditService
) -> None:
    server = live_server(poll_interval=0.05)
    with stream(server) as events:
        more_calls(trail, 3)
        first = events.entries(3)
    assert [e["tool_name"] for e in first] == ["live_tool"] * 3
    assert [e["parameters"]["i"] for e in first] == [0, 1, 2]
    # Disconnected: calls go on. The reconnect with the last id gets exactly the rest.
    more_calls(trail, 4)
    with stream(server, **{"Last-Event-ID": str(first[-1]["id"])}) as events:
        rest = events.entries(4)
        more_calls(trail, 1)
        rest += events.entries(1)
    assert [e["parameters"]["i"] for e in rest] == [0, 1, 2, 3, 0]
    assert len({e["id"] for e in first + rest}) == 8


def test_filtered_stream_gets_only_matching_entries(
    live_server: Callable[..., LiveServer], trail: AuditService
) -> None:
    server = live_server(poll_interval=0.05)
    with stream(server, "?tool=live_tool&user=dave&param=needle") as events:
        more_calls(trail, 5, user="carol")
        record(trail, [("live_tool", {"q": "a needle here"}, False, {"user": "dave"})])
        record(trail, [("other", {"q": "needle"}, False, {"user": "dave"})])
        record(trail, [("live_tool", {"q": "needle"}, True, {"user": "dave"})])
        got = events.entries(2)
    assert [(e["tool_name"], e["user"], e["status"]) for e in got] == [
        ("live_tool", "dave", "SUCCESS"),
        ("live_tool", "dave", "FAILURE"),
    ]


def test_heartbeat_when_nothing_happens(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(heartbeat=0.2)
    with stream(server) as events:
        beats = [events.next() for _ in range(2)]
    assert [b["event"] for b in beats] == ["heartbeat", "heartbeat"]
    assert all("id" not in b for b in beats)  # a heartbeat never moves Last-Event-ID


def test_ten_streams_share_one_poller(
    live_server: Callable[..., LiveServer], trail: AuditService
) -> None:
    server = live_server(poll_interval=0.05)
    poller = server.server.config.app.state.poller
    with contextlib_exit_stack() as stack:
        streams = [stack.enter_context(stream(server)) for _ in range(10)]
        assert poller.streams == 10
        polls_before = poller.polls
        more_calls(trail, 2)
        for events in streams:
            assert [e["parameters"]["i"] for e in events.entries(2)] == [0, 1]
        polls = poller.polls - polls_before
    # One query per tick for all ten, not ten: at most a few ticks passed per delivered batch.
    assert polls >= 1
    from tests.helpers import wait_until

    wait_until(lambda: poller.streams == 0, timeout=30)


def contextlib_exit_stack() -> Any:
    import contextlib

    return contextlib.ExitStack()


WRITER = """
import sys
from finops_audit import AuditService, audit_tool_sync
svc = AuditService(db_path=sys.argv[1], handle_signals=False)

@audit_tool_sync(service=svc, name="from_another_process")
def tool(i: int) -> int:
    return i

for i in range(int(sys.argv[2])):
    tool(i=i)
svc.close()
"""


def test_entries_from_another_process_on_the_same_file(
    live_server: Callable[..., LiveServer], trail: AuditService, tmp_path: Path
) -> None:
    server = live_server(poll_interval=0.05)
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    with stream(server, "?tool=from_another_process") as events:
        subprocess.run(
            [sys.executable, str(script), str(trail.db_path), "25"], check=True, timeout=120
        )
        got = events.entries(25)
    assert [e["parameters"]["i"] for e in got] == list(range(25))


def test_bad_filter_is_refused_before_streaming(live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    response = httpx.get(f"{server.url}/api/stream?since=never", headers=AUTH, timeout=30)
    assert response.status_code == 400
    assert "since" in response.json()["error"]


@pytest.mark.asyncio
async def test_a_stream_that_falls_behind_reads_the_gap(
    trail: AuditService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow stream whose buffer overflows loses no entry and repeats none."""
    monkeypatch.setattr(_tail, "BUFFERED_BATCHES", 1)
    monkeypatch.setattr(_tail, "PAGE", 3)
    poller = _tail.Poller(trail, interval=0.01)
    start = all_ids(trail)[-1]
    events = _tail.stream_events(trail, poller, Filters(), start, heartbeat=30)

    async def next_ids(count: int) -> list[int]:
        found: list[int] = []
        while len(found) < count:
            chunk = await anext(events)
            assert isinstance(chunk, bytes)  # entries go out as encoded frames
            found += [int(line[4:]) for line in chunk.decode().splitlines() if line[:4] == "id: "]
        return found

    try:
        hello = await anext(events)
        assert hello.event == "hello"
        # Not reading: the poller fills the one-batch buffer and refuses the rest.
        await asyncio.to_thread(more_calls, trail, 20)
        for _ in range(2000):
            if poller.last >= start + 20:
                break
            await asyncio.sleep(0.01)
        assert await next_ids(20) == list(range(start + 1, start + 21))
        await asyncio.to_thread(more_calls, trail, 2)
        assert await next_ids(2) == [start + 21, start + 22]
    finally:
        await events.aclose()
        await poller.aclose()
