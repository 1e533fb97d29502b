"""Nothing lost silently: one bad entry cannot kill the writer (issue 10, section 3).

Each case makes one entry the row formatting or the database refuses (a lone
surrogate in a label, a label key, a caller field, a tool name, an error
message; objects whose ``__str__``/``__repr__`` raise) while other threads keep
calling. Every other entry lands, the bad one is stored in a safe form,
``flush()`` returns, and ``stats()`` accounts for every entry. Rows are read
back from the file with a fresh ``sqlite3`` connection.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from finops_audit import (
    AuditError,
    AuditService,
    AuditWriterError,
    audit_context,
    audit_tool_sync,
)
from finops_audit._salvage import SANITIZED_KEY
from tests.guarantees._support import count, rows

GOOD_THREADS = 3
GOOD_CALLS = 150


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class _EvilStr(str):
    """A str whose own ``__str__`` raises: must be read as the plain text it holds."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot describe myself")


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.fixture
def service(tmp_path: Path) -> Iterator[AuditService]:
    svc = AuditService(tmp_path / "audit.db", batch_size=16, flush_interval=0.005)
    yield svc
    svc.close()


def _good_callers(svc: AuditService, start: threading.Event) -> list[threading.Thread]:
    @audit_tool_sync(name="good", service=svc)
    def good(worker: int, i: int) -> int:
        return i

    def work(worker: int) -> None:
        start.wait(10)
        for i in range(GOOD_CALLS):
            good(worker, i)

    return [threading.Thread(target=work, args=(w,)) for w in range(GOOD_THREADS)]


#: name -> a function that makes one bad call through ``svc`` (tool name "bad...").
def _label_value(svc: AuditService) -> None:
    with audit_context(tenant="acme\udc80"):
        _tool(svc)(1)


def _label_key(svc: AuditService) -> None:
    with audit_context(**{"ten\udc80ant": "acme"}):
        _tool(svc)(1)


def _user(svc: AuditService) -> None:
    with audit_context(user="al\udc80ice", session_id="s\udcff", client_name="c\ud800"):
        _tool(svc)(1)


def _request_id(svc: AuditService) -> None:
    with audit_context(request_id="r\udc80", auth_client_id="\udfff"):
        _tool(svc)(1)


def _tool_name(svc: AuditService) -> None:
    @audit_tool_sync(name="bad\udc80tool", service=svc)
    def tool(x: int) -> int:
        return x

    tool(1)


def _error_message(svc: AuditService) -> None:
    with pytest.raises(ValueError):
        _tool(svc, fail=ValueError("bad region \udc80 here"))(1)


def _unprintable_error(svc: AuditService) -> None:
    with pytest.raises(_UnprintableError):
        _tool(svc, fail=_UnprintableError())(1)


def _unprintable_param(svc: AuditService) -> None:
    _tool(svc)(_Unprintable())


def _surrogate_param(svc: AuditService) -> None:
    _tool(svc)({"k\udc80": "v\udc80", "nested": ["\ud800"]})


def _evil_str_label(svc: AuditService) -> None:
    with audit_context(user=_EvilStr("eve"), team=_EvilStr("red\udc80")):
        _tool(svc)(1)


def _everything(svc: AuditService) -> None:
    @audit_tool_sync(name="bad\udc80all", service=svc)
    def tool(x: Any) -> None:
        raise ValueError("m\udc80")

    context = audit_context(user="u\udc80", tenant="t\udc80", **{"k\udc80": "v"})
    with context, pytest.raises(ValueError):
        tool({"p\udc80": _Unprintable()})


def _tool(svc: AuditService, fail: BaseException | None = None) -> Callable[[Any], Any]:
    @audit_tool_sync(name="bad", service=svc)
    def bad(x: Any) -> Any:
        if fail is not None:
            raise fail
        return x

    return bad


CASES: dict[str, Callable[[AuditService], None]] = {
    "surrogate in a label value": _label_value,
    "surrogate in a label key": _label_key,
    "surrogates in caller fields": _user,
    "surrogates in request and auth ids": _request_id,
    "surrogate in the tool name": _tool_name,
    "surrogate in the error message": _error_message,
    "exception whose __str__ raises": _unprintable_error,
    "parameter whose __str__ and __repr__ raise": _unprintable_param,
    "surrogates in parameter keys and values": _surrogate_param,
    "str subclass whose __str__ raises": _evil_str_label,
    "all of them at once": _everything,
}


@pytest.mark.parametrize("make_bad", list(CASES.values()), ids=list(CASES))
def test_one_bad_entry_among_concurrent_callers(
    service: AuditService, make_bad: Callable[[AuditService], None]
) -> None:
    start = threading.Event()
    threads = _good_callers(service, start)
    for t in threads:
        t.start()
    start.set()
    make_bad(service)  # mid-burst
    for t in threads:
        t.join(30)
    make_bad(service)  # and once more after the burst, alone in its batch
    service.flush()  # no timeout: it must return
    path = service.settings.db_path
    assert count(path, "WHERE tool_name = 'good'") == GOOD_THREADS * GOOD_CALLS
    bad = rows(path, "WHERE tool_name LIKE 'bad%'")
    assert len(bad) == 2, bad
    stats = service.stats()
    total = GOOD_THREADS * GOOD_CALLS + 2
    assert (stats.written, stats.lost, stats.pending, stats.dropped) == (total, 0, 0, 0)
    assert stats.running
    # Whatever it held, the stored text is valid UTF-8 (surrogates escaped).
    for row in bad:
        for value in row.values():
            if isinstance(value, str):
                value.encode("utf-8")
    assert len(service.get_logs(tool_name=bad[0]["tool_name"], limit=10)) >= 1
    # The writer goes on: a later call lands too.
    _tool(service)(2)
    service.flush(timeout=30)
    assert count(path, "WHERE tool_name LIKE 'bad%'") == 3


def test_surrogate_label_is_kept_escaped_and_marked(service: AuditService) -> None:
    _label_value(service)
    service.flush(timeout=30)
    (row,) = rows(service.settings.db_path)
    assert json.loads(row["labels"]) == {"tenant": "acme\\udc80"}
    assert row["parameters"][SANITIZED_KEY].startswith("TypeError")
    assert row["parameters"]["x"] == 1  # the parameters are kept beside the marker
    (entry,) = service.get_logs()
    assert entry.labels == {"tenant": "acme\\udc80"}


def test_str_subclass_in_audit_context_is_plain_text(service: AuditService) -> None:
    _evil_str_label(service)
    service.flush(timeout=30)
    (row,) = rows(service.settings.db_path)
    assert row["user"] == "eve"
    assert json.loads(row["labels"]) == {"team": "red\\udc80"}


def test_marker_never_quotes_the_failing_value(tmp_path: Path) -> None:
    """The safe form names the exception type only: its message may hold a secret."""

    def redact(doc: dict[str, Any]) -> dict[str, Any]:
        return doc

    svc = AuditService(tmp_path / "a.db", redactor=redact)
    try:
        with audit_context(password_hint="hunter2-horse\udc80"):
            _tool(svc)(1)
        svc.flush(timeout=30)
        raw = (tmp_path / "a.db").read_bytes() + (tmp_path / "a.db-wal").read_bytes()
        assert b"surrogates not allowed" not in raw
    finally:
        svc.close()


class _Stop(BaseException):
    """What a hook might raise that is no Exception (like SystemExit)."""


def test_flush_raises_when_the_writer_thread_dies_and_it_restarts(tmp_path: Path) -> None:
    armed = threading.Event()
    armed.set()

    def redact(doc: dict[str, Any]) -> dict[str, Any]:
        if armed.is_set() and doc.get("x") == "boom":
            raise _Stop("a hook ended the writer thread")
        return doc

    svc = AuditService(tmp_path / "a.db", redactor=redact, flush_interval=0.005)
    tool = _tool(svc)
    try:
        tool("ok")
        svc.flush(timeout=30)
        tool("boom")
        with pytest.raises(AuditWriterError, match="_Stop") as caught:
            svc.flush()  # no timeout: it raises instead of waiting forever
        assert isinstance(caught.value, AuditError)
        assert isinstance(caught.value, RuntimeError)
        stats = svc.stats()
        assert stats.lost == 1  # the entry the writer held is counted, never silently gone
        assert not stats.running
        # The next call restarts the writer; the loss is in the trail as a gap row.
        armed.clear()
        tool("after")
        svc.flush(timeout=30)
        assert svc.stats().running
        stored = rows(tmp_path / "a.db")
        assert [r["parameters"].get("x") for r in stored if r["tool_name"] == "bad"] == [
            "ok",
            "after",
        ]
        gaps = [r for r in stored if r["tool_name"] == "__audit_gap__"]
        assert len(gaps) == 1
        assert gaps[0]["parameters"]["dropped"] == 1
        assert "_Stop" in gaps[0]["parameters"]["reason"]
    finally:
        armed.clear()
        with pytest.raises(AuditError, match="1 audit entries"):
            svc.close()
    assert svc.stats().lost == 1


@pytest.mark.asyncio
async def test_aflush_raises_when_the_writer_thread_dies(tmp_path: Path) -> None:
    def redact(doc: dict[str, Any]) -> dict[str, Any]:
        raise _Stop("a hook ended the writer thread")

    svc = AuditService(tmp_path / "a.db", redactor=redact, flush_interval=0.005)
    try:
        _tool(svc)("boom")
        with pytest.raises(AuditWriterError):
            await svc.aflush()
    finally:
        with pytest.raises(AuditError):
            svc.close()
