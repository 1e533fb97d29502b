"""Upgrading gives old rows their identity once; opening never rewrites a stored row.

A trail from the design note's code has no ``event_id`` column: the upgrade
adds it and gives each old row its own random id, once. After that, no open
(by a writer or a reader) may change a stored row: a forwarder deduplicates on
these ids, and an audit trail whose rows change on open proves nothing.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from finops_audit import AuditService, audit_tool_sync

from .test_legacy_schema import SEED_ROWS, _seed


def all_rows(db_path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT * FROM audit_logs ORDER BY id").fetchall()


def event_ids(db_path: Path) -> list[str | None]:
    with closing(sqlite3.connect(db_path)) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM audit_logs ORDER BY id")]


def test_upgraded_rows_get_one_distinct_event_id_each_once(db_path: Path) -> None:
    _seed(db_path)
    with AuditService(db_path) as svc:
        assert svc.count() == len(SEED_ROWS)
    first = event_ids(db_path)
    assert len(first) == len(SEED_ROWS)
    assert all(isinstance(e, str) and re.fullmatch(r"[0-9a-f]{32}", e) for e in first)
    assert len(set(first)) == len(first)
    with AuditService(db_path) as svc:
        assert [e.event_id for e in svc.iter_logs()] == first
    assert event_ids(db_path) == first  # not drawn again on the next open


def test_opening_a_current_trail_never_rewrites_a_stored_row(db_path: Path) -> None:
    with AuditService(db_path) as svc:

        @audit_tool_sync(service=svc)
        def pay(to: str) -> str:
            return to

        for i in range(3):
            pay(f"acct-{i}")
    with closing(sqlite3.connect(db_path)) as conn:  # a row another tool left without an id
        conn.execute("UPDATE audit_logs SET event_id = NULL WHERE id = 2")
        conn.commit()
    before = all_rows(db_path)
    with AuditService(db_path) as svc:

        @audit_tool_sync(service=svc)
        def refund(to: str) -> str:
            return to

        refund("acct-9")
    after = all_rows(db_path)
    assert after[:3] == before
    assert event_ids(db_path)[1] is None
    assert len(after) == 4


def test_reopening_a_healthy_trail_warns_about_nothing(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The "lost its audit_meta" warning is for a tampered trail, never a healthy one."""
    key = "upgrade-test-key-0123456789abcdef-0123"
    for _ in range(2):
        with AuditService(db_path, hmac_key=key) as svc:

            @audit_tool_sync(service=svc)
            def pay(to: str) -> str:
                return to

            caplog.set_level(logging.WARNING, logger="finops_audit")
            pay("acct-1")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    with AuditService(db_path, hmac_key=key) as svc:
        assert svc.verify().ok
