"""PostgresSink against a real PostgreSQL: schema, partitions, idempotence, hostile data, faults.

Rows are built the way the forwarder hands them over (``BufferedRow`` values,
chained with the real :class:`Chainer`), and once from a real SQLite trail
written by ``AuditService``. Every check reads PostgreSQL back with plain SQL;
every wait is a bounded poll or a thread join with a timeout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from finops_audit import AuditService, audit_context, audit_tool_sync
from finops_audit._chain import GENESIS, Chainer
from finops_audit.exceptions import AuditStorageError
from finops_audit.forwarding.base import BUFFER_COLUMNS, BufferedRow, ForwardSink, ReplicaInfo
from finops_audit.storage._pg_schema import partition_name
from finops_audit.storage.sqlite import format_timestamp

psycopg = pytest.importorskip("psycopg")

from finops_audit.forwarding import _pg_rows  # noqa: E402
from finops_audit.forwarding._pg_rows import (  # noqa: E402
    CHAIN_COLUMNS,
    chain_fields,
    jsonb_input,
    restore_text,
    stored_text,
)
from finops_audit.forwarding.postgres import (  # noqa: E402  (needs psycopg)
    PostgresSink,
    mask_url,
    replica_signature,
)

CHAINER = Chainer()
REPLICA = ReplicaInfo(replica_id="replica-a", buffer_id="a" * 32, legacy_through=0)
NO_CALLER: tuple[None, ...] = (None,) * 9


# ---------------------------------------------------------------- helpers
def body(when: datetime, i: int, **fields: Any) -> tuple[Any, ...]:
    """One buffer row without id, event id and hash: what the chain covers."""
    row = {
        "timestamp": format_timestamp(when),
        "tool_name": "get_cost",
        "parameters": orjson.dumps({"i": i, "region": "eu-west-1"}).decode(),
        "status": "SUCCESS",
        "error_message": None,
        "execution_time_ms": 1.25 + i,
        **dict(zip(BUFFER_COLUMNS[9:], NO_CALLER, strict=True)),
    }
    row.update(fields)
    return tuple(row[c] for c in BUFFER_COLUMNS[2:8] + BUFFER_COLUMNS[9:])


def chained(
    bodies: Sequence[tuple[Any, ...]], first: int = 1, prev: str = GENESIS
) -> list[BufferedRow]:
    linked, _ = CHAINER.link(first, prev, bodies)
    return [BufferedRow(r[0], uuid.uuid4().hex, *r[1:7], r[16], *r[7:16]) for r in linked]


def unchained(bodies: Sequence[tuple[Any, ...]], first: int) -> list[BufferedRow]:
    return [
        BufferedRow(first + n, uuid.uuid4().hex, *b[:6], None, *b[6:]) for n, b in enumerate(bodies)
    ]


def trail(count: int, start: datetime | None = None) -> list[BufferedRow]:
    start = start or datetime.now(timezone.utc) - timedelta(minutes=1)
    return chained([body(start + timedelta(milliseconds=i), i) for i in range(count)])


def prev_of(rows: Sequence[BufferedRow], index: int) -> str:
    return GENESIS if index == 0 else rows[index - 1].row_hash or GENESIS


def query(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def count(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM audit_logs")[0][0])


def replica_row(url: str, replica_id: str = "replica-a") -> tuple[Any, ...]:
    rows = query(
        url,
        "SELECT buffer_id, anchor_seq, anchor_hash, legacy_through, signature, "
        "forwarded_seq, forwarded_rows FROM audit_replicas WHERE replica_id = %s",
        (replica_id,),
    )
    assert len(rows) == 1
    return rows[0]


def assert_chain(url: str, replica_id: str = "replica-a") -> int:
    """Recompute the replica's chain from the central columns alone; rows checked."""
    _, anchor_seq, anchor_hash, *_ = replica_row(url, replica_id)
    rows = query(
        url,
        f"SELECT seq, row_hash, {', '.join(CHAIN_COLUMNS)} FROM audit_logs "
        "WHERE replica_id = %s AND row_hash IS NOT NULL ORDER BY seq",
        (replica_id,),
    )
    prev, expected = anchor_hash, anchor_seq + 1
    for seq, row_hash, *values in rows:
        assert seq == expected
        assert CHAINER.row_hash(seq, chain_fields(values), prev) == row_hash, seq
        prev, expected = row_hash, seq + 1
    return len(rows)


@pytest.fixture
def sink(pg_url: str) -> Iterator[PostgresSink]:
    made = PostgresSink(pg_url, CHAINER)
    yield made
    made.close()


def run_in_thread(fn: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# ---------------------------------------------------------------- basics
def test_sink_shape(pg_url: str) -> None:
    sink = PostgresSink(pg_url, CHAINER)
    assert isinstance(sink, ForwardSink)
    assert sink.name == "postgres"
    assert sink.describe() == mask_url(pg_url)
    sink.send(REPLICA, [], GENESIS)  # nothing to do: not even a connection
    assert sink._conn is None
    sink.close()
    sink.close()


def test_a_real_trail_lands_exactly_and_verifies_centrally(pg_url: str, tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.db"
    with AuditService(db_path=buffer) as service:

        @audit_tool_sync(name="scan", service=service)
        def scan(account: str, limit: int = 10) -> int:
            if limit < 0:
                raise ValueError(f"bad limit for {account}")
            return limit

        for i in range(30):
            with audit_context(user=f"user{i % 3}", session_id="s-1", team="finops", n=str(i)):
                try:
                    scan(f"acct-{i}", limit=-1 if i % 7 == 0 else i)
                except ValueError:
                    pass
        scan("outside any context")
    columns = ", ".join(f'"{c}"' for c in BUFFER_COLUMNS)
    with sqlite3.connect(buffer) as conn:
        rows = [BufferedRow(*r) for r in conn.execute(f"SELECT {columns} FROM audit_logs")]
    conn.close()
    assert len(rows) == 31
    assert all(r.row_hash for r in rows)
    sink = PostgresSink(pg_url, CHAINER)
    try:
        sink.send(REPLICA, rows[:10], GENESIS)
        sink.send(REPLICA, rows[10:], rows[9].row_hash or GENESIS)
    finally:
        sink.close()

    stored = query(
        pg_url,
        "SELECT seq, event_id::text, id, replica_id, parameters, parameters_text, labels, "
        'labels_text, "user", status, error_message FROM audit_logs ORDER BY seq',
    )
    assert [s[0] for s in stored] == [r.seq for r in rows]
    assert [s[1].replace("-", "") for s in stored] == [r.event_id for r in rows]
    ids = [s[2] for s in stored]
    assert ids == sorted(ids)  # central ids follow the chain's order
    for row, (_, _, _, rid, params, params_text, labels, labels_text, user, status, error) in zip(
        rows, stored, strict=True
    ):
        assert rid == "replica-a"
        assert params_text == row.parameters
        assert params == orjson.loads(row.parameters)
        assert labels_text == row.labels
        assert labels == (orjson.loads(row.labels) if row.labels else None)
        assert (user, status, error) == (row.user, row.status, row.error_message)
    assert assert_chain(pg_url) == 31
    buffer_id, anchor_seq, anchor_hash, legacy, signature, fwd_seq, fwd_rows = replica_row(pg_url)
    assert (buffer_id, anchor_seq, anchor_hash, legacy) == (REPLICA.buffer_id, 0, GENESIS, 0)
    assert signature == replica_signature(
        CHAINER, "replica-a", REPLICA.buffer_id, 0, GENESIS, 0, row_scheme=2
    )
    assert (fwd_seq, fwd_rows) == (31, 31)


def test_the_anchor_is_the_first_batch_sent(pg_url: str, sink: PostgresSink) -> None:
    rows = trail(20)
    sink.send(REPLICA, rows[12:], rows[11].row_hash or GENESIS)  # 1..12 purged before
    _, anchor_seq, anchor_hash, _, signature, fwd_seq, fwd_rows = replica_row(pg_url)
    assert (anchor_seq, anchor_hash) == (12, rows[11].row_hash)
    assert signature == replica_signature(
        CHAINER, "replica-a", "a" * 32, 12, anchor_hash, 0, row_scheme=2
    )
    assert (fwd_seq, fwd_rows) == (20, 8)
    assert assert_chain(pg_url) == 8
    keyed = Chainer(b"k" * 32)
    assert replica_signature(keyed, "replica-a", "a" * 32, 12, anchor_hash, 0, 2) != signature


# ---------------------------------------------------------------- schema and partitions
def test_schema_created_once_by_many_sinks_at_once(pg_url: str) -> None:
    sinks = [PostgresSink(pg_url, CHAINER) for _ in range(8)]
    barrier = threading.Barrier(len(sinks))
    trails = [trail(50) for _ in sinks]

    def start(n: int) -> Callable[[], None]:
        def go() -> None:
            barrier.wait(timeout=30)
            replica = ReplicaInfo(f"replica-{n}", f"buffer-{n}", 0)
            sinks[n].send(replica, trails[n], GENESIS)

        return go

    threads = [run_in_thread(start(n)) for n in range(len(sinks))]
    try:
        for thread, errors in threads:
            thread.join(timeout=90)
            assert not thread.is_alive()
            assert errors == []
    finally:
        for s in sinks:
            s.close()
    assert count(pg_url) == 50 * len(sinks)
    assert len(query(pg_url, "SELECT DISTINCT id FROM audit_logs")) == 50 * len(sinks)
    names = {r[0] for r in query(pg_url, "SELECT relname FROM pg_class")}
    assert {"audit_logs", "audit_replicas", "audit_checkpoints", "audit_logs_id_seq"} <= names
    assert query(
        pg_url,
        "SELECT 1 FROM pg_attribute WHERE attrelid = 'audit_logs'::regclass "
        "AND attname = 'labels_text'",
    )


def partitions(url: str) -> dict[str, str]:
    return dict(
        query(
            url,
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_logs'::regclass",
        )
    )


def test_partitions_for_every_month_in_a_batch_and_the_one_after(
    pg_url: str, sink: PostgresSink
) -> None:
    now = datetime.now(timezone.utc).replace(day=15, hour=12)
    past = datetime(2024, 11, 30, 23, 59, 59, 999999, tzinfo=timezone.utc)
    december = datetime(2024, 12, 1, tzinfo=timezone.utc)
    nxt = (now.replace(day=1) + timedelta(days=32)).replace(day=3)
    rows = chained([body(past, 0), body(december, 1), body(now, 2), body(nxt, 3)])
    sink.send(REPLICA, rows, GENESIS)
    after = (nxt.replace(day=1) + timedelta(days=32)).replace(day=1)
    expected = {partition_name(d) for d in (past, december, now, nxt, after)}
    found = partitions(pg_url)
    assert set(found) == expected
    assert found["audit_logs_202411"] == (
        "FOR VALUES FROM ('2024-11-01 00:00:00+00') TO ('2024-12-01 00:00:00+00')"
    )
    # each row in its month, and the indexes attached to every partition
    placed = query(pg_url, "SELECT tableoid::regclass::text, seq FROM audit_logs ORDER BY seq")
    assert placed[:2] == [("audit_logs_202411", 1), ("audit_logs_202412", 2)]
    for name in expected:
        indexes = query(
            pg_url, "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (name,)
        )
        assert indexes[0][0] == 6  # primary key + the five of the schema
    # December to January: the year rolls over
    rows = chained([body(datetime(2030, 12, 31, 23, tzinfo=timezone.utc), 9)], first=5)
    sink.send(REPLICA, rows, GENESIS)
    assert {"audit_logs_203012", "audit_logs_203101"} <= set(partitions(pg_url))


def test_partitions_made_by_the_schema_helper_are_reused(pg_url: str, sink: PostgresSink) -> None:
    from finops_audit.storage._pg_schema import SCHEMA_STATEMENTS, partition_ddl

    now = datetime.now(timezone.utc)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in SCHEMA_STATEMENTS:
            conn.execute(statement)
        conn.execute(partition_ddl(now))
    sink.send(REPLICA, trail(5, now), GENESIS)
    assert count(pg_url) == 5


def test_a_new_month_does_not_wait_for_a_long_reader(pg_url: str, sink: PostgresSink) -> None:
    """ATTACH PARTITION, not CREATE … PARTITION OF (which needs ACCESS EXCLUSIVE)."""
    sink.send(REPLICA, trail(3), GENESIS)
    with psycopg.connect(pg_url) as reader:
        reader.execute("SELECT count(*) FROM audit_logs").fetchone()  # holds its lock
        later = chained([body(datetime(2031, 5, 5, tzinfo=timezone.utc), 7)], first=10)
        thread, errors = run_in_thread(lambda: sink.send(REPLICA, later, GENESIS))
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert errors == []
        reader.rollback()
    assert {"audit_logs_203105", "audit_logs_203106"} <= set(partitions(pg_url))


def test_a_plain_table_with_a_partition_name_is_a_clear_error(pg_url: str) -> None:
    sink = PostgresSink(pg_url, CHAINER)
    try:
        sink.send(REPLICA, trail(1), GENESIS)
        query(pg_url, "CREATE TABLE audit_logs_203502 (x int)")
        rows = chained([body(datetime(2035, 2, 2, tzinfo=timezone.utc), 1)], first=2)
        with pytest.raises(AuditStorageError, match="audit_logs_203502 exists but is not"):
            sink.send(REPLICA, rows, GENESIS)
    finally:
        sink.close()
    # the check made again under the partition lock says the same
    from finops_audit.storage._pg_schema import partition_ddl

    with (
        psycopg.connect(pg_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.RaiseException, match="audit_logs_203502 exists but is not"),
    ):
        conn.execute(partition_ddl(datetime(2035, 2, 2)))


def test_central_rows_fill_the_schema_columns() -> None:
    from finops_audit.storage._pg_schema import CENTRAL_COLUMNS

    values, months = _pg_rows.central_rows("r", trail(1))
    assert len(values[0]) == len(CENTRAL_COLUMNS)
    assert len(months) == 1
    assert set(CHAIN_COLUMNS) < set(CENTRAL_COLUMNS)
    assert CENTRAL_COLUMNS.index("labels_text") == CENTRAL_COLUMNS.index("labels") + 1


def test_partition_ddl_makes_the_named_month_with_its_bounds() -> None:
    from finops_audit.storage._pg_schema import PARTITION_LOCK_KEY, partition_ddl

    for when in (datetime(2026, 1, 1), datetime(2026, 12, 31), datetime(1999, 7, 4)):
        ddl = partition_ddl(when)
        assert f"ATTACH PARTITION {partition_name(when)} " in ddl
        assert f"FROM ('{when.year:04d}-{when.month:02d}-01 00:00:00+00')" in ddl
        assert f"pg_advisory_xact_lock({PARTITION_LOCK_KEY})" in ddl
        assert "PARTITION OF" not in ddl
    # the last month datetime can hold still has an end
    assert "TO ('10000-01-01 00:00:00+00')" in partition_ddl(datetime(9999, 12, 31))
    # an aware time is placed by its UTC month
    eve = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert "ATTACH PARTITION audit_logs_202512 " in partition_ddl(eve)


# ---------------------------------------------------------------- idempotence
def test_the_same_batch_twice_inserts_nothing_the_second_time(
    pg_url: str, sink: PostgresSink
) -> None:
    rows = trail(25)
    sink.send(REPLICA, rows, GENESIS)
    before = query(pg_url, "SELECT id, event_id FROM audit_logs ORDER BY id")
    sink.send(REPLICA, rows, GENESIS)
    other = PostgresSink(pg_url, CHAINER)  # a restarted forwarder, a new connection
    try:
        other.send(REPLICA, rows, GENESIS)
    finally:
        other.close()
    assert query(pg_url, "SELECT id, event_id FROM audit_logs ORDER BY id") == before
    assert replica_row(pg_url)[5:] == (25, 25)


def test_an_overlapping_batch_inserts_only_its_new_rows(pg_url: str, sink: PostgresSink) -> None:
    rows = trail(30)
    sink.send(REPLICA, rows[:10], GENESIS)
    sink.send(REPLICA, rows[5:20], prev_of(rows, 5))
    assert count(pg_url) == 20
    assert replica_row(pg_url)[5:] == (20, 20)
    sink.send(REPLICA, rows[:3], GENESIS)  # an old batch again: progress does not go back
    assert replica_row(pg_url)[5:] == (20, 20)
    sink.send(REPLICA, rows[15:], prev_of(rows, 15))
    assert count(pg_url) == 30
    assert replica_row(pg_url)[5:] == (30, 30)
    seqs = query(pg_url, "SELECT seq FROM audit_logs ORDER BY id")
    assert [s[0] for s in seqs] == list(range(1, 31))
    assert assert_chain(pg_url) == 30


def test_a_replica_id_taken_by_another_buffer_is_refused(pg_url: str, sink: PostgresSink) -> None:
    sink.send(REPLICA, trail(5), GENESIS)
    impostor = ReplicaInfo(REPLICA.replica_id, "b" * 32, 0)
    second = PostgresSink(pg_url, CHAINER)
    try:
        with pytest.raises(AuditStorageError) as caught:
            second.send(impostor, trail(5), GENESIS)
        assert str(caught.value) == (
            "replica id replica-a is already used by another buffer; "
            "give this replica its own AUDIT_REPLICA_ID"
        )
        assert count(pg_url) == 5
        # the same sink still serves a replica of its own
        second.send(ReplicaInfo("replica-b", "b" * 32, 0), trail(4), GENESIS)
    finally:
        second.close()
    assert count(pg_url) == 9
    assert replica_row(pg_url)[0] == "a" * 32


def test_a_registration_race_is_refused_by_the_upsert(pg_url: str) -> None:
    """Both buffers pass the early check; the second to commit must still be refused."""
    first, second = PostgresSink(pg_url, CHAINER), PostgresSink(pg_url, CHAINER)
    try:
        first.send(ReplicaInfo("warmup", "w", 0), trail(1), GENESIS)
        second.send(ReplicaInfo("warmup-2", "w2", 0), trail(1), GENESIS)
        first._check_replica(first._conn, "replica-a", "a" * 32)  # type: ignore[arg-type]
        second._check_replica(second._conn, "replica-a", "b" * 32)  # type: ignore[arg-type]
        first.send(REPLICA, trail(3), GENESIS)
        with pytest.raises(AuditStorageError, match="already used by another buffer"):
            second.send(ReplicaInfo("replica-a", "b" * 32, 0), trail(3), GENESIS)
    finally:
        first.close()
        second.close()
    assert (
        int(query(pg_url, "SELECT count(*) FROM audit_logs WHERE replica_id = 'replica-a'")[0][0])
        == 3
    )


# ---------------------------------------------------------------- hostile data
HUGE = '{"blob":"' + "x" * 5_000_000 + '"}'
DEEP = "[" * 5000 + "]" * 5000
MARK = "\ufdd0"


def hostile_chained(now: datetime) -> list[tuple[Any, ...]]:
    return [
        body(now, 1, tool_name="nul\x00tool", error_message="boom\x00", user="u\x00ser"),
        body(now, 2, parameters='{"a":"x\\u0000y"}'),
        body(now, 3, parameters="not json {"),
        body(now, 4, parameters="raw\x00nul", labels='{"k":"v\x00"}'),
        body(now, 5, parameters=HUGE),
        body(
            now,
            6,
            tool_name="工具-🚀-أداة",
            parameters=orjson.dumps({"q": "naïve 😀 \u202e rtl", "€": [1, 2]}).decode(),
            labels='{"équipe":"café","z":"1","a":"2"}',
        ),
        body(now, 7, tool_name=MARK + "looks escaped", user=MARK),
        body(now, 8, labels="not-json"),
        body(now, 9, labels="[1,2]"),
        body(now, 10, parameters='{"a": NaN}'),
        body(now, 11, parameters='{"a":1e400,"b":123456789012345678901234567890}'),
        body(now, 12, parameters=DEEP),
        body(now, 13, parameters='{"k":"\\ud800"}'),
        body(now, 14, parameters="", error_message="\t\n\r\\N\\."),
    ]


def hostile_unchained(now: datetime) -> list[tuple[Any, ...]]:
    return [
        body(now, 20, parameters='{"a":"\ud800"}', user="\udcff", labels='{"k":"\ud800"}'),
        body(now, 21, tool_name="lone\udfff", error_message="x\ud83d"),
    ]


def test_hostile_rows_land_and_the_chain_still_verifies(pg_url: str, sink: PostgresSink) -> None:
    now = datetime.now(timezone.utc)
    rows = chained(hostile_chained(now))
    rows += unchained(hostile_unchained(now), first=len(rows) + 1)
    sink.send(REPLICA, rows, GENESIS)
    assert count(pg_url) == len(rows)
    assert assert_chain(pg_url) == 14

    stored = {
        r[0]: r[1:]
        for r in query(
            pg_url,
            "SELECT seq, tool_name, parameters, parameters_text, labels, labels_text, "
            '"user", error_message FROM audit_logs',
        )
    }
    for row in rows:  # every text comes back exactly, chained or not
        tool, _, params_text, _, labels_text, user, error = stored[row.seq]
        assert restore_text(tool) == row.tool_name
        assert restore_text(user) == row.user
        assert restore_text(error) == row.error_message
        if row.row_hash is None:
            assert params_text is None
            assert labels_text is None
        else:
            assert restore_text(params_text) == row.parameters
            assert restore_text(labels_text) == row.labels

    def params(seq: int) -> Any:
        return stored[seq][1]

    assert params(2) == {"a": "x\ufffdy"}
    assert params(3) == {"$unparsed": "not json {"}
    assert params(4) == {"$unparsed": "raw\ufffdnul"}
    assert stored[4][3] == {"k": "v\ufffd"}
    assert params(5) == {"blob": "x" * 5_000_000}
    assert params(6) == {"q": "naïve 😀 \u202e rtl", "€": [1, 2]}
    assert stored[6][0] == "工具-🚀-أداة"
    assert stored[6][3] == {"équipe": "café", "z": "1", "a": "2"}
    assert stored[6][4] == '{"équipe":"café","z":"1","a":"2"}'  # key order kept
    assert stored[8][3] == {"$unparsed": "not-json"}
    assert stored[9][3] == {"$unparsed": "[1,2]"}
    assert params(10) == {"$unparsed": '{"a": NaN}'}
    assert params(11) == {"a": "1e400", "b": 123456789012345678901234567890}
    assert params(12) == {"$unparsed": DEEP}
    assert params(13) == {"k": "\ufffd"}
    assert params(14) == {"$unparsed": ""}
    assert params(15) == {"a": "\ufffd"}
    assert stored[15][3] == {"k": "\ufffd"}
    # the stored jsonb is what a verifier recomputes from the chained text
    for row in rows[:14]:
        assert params(row.seq) == json.loads(jsonb_input(row.parameters))


def test_restore_text_inverts_the_escaping() -> None:
    samples = ["", "plain", "a\x00b", MARK, MARK + "x", "\ud800", "x\udfffy", '"\\', "😀\x00"]
    for text in samples:
        stored = stored_text(text)
        assert stored is not None
        assert "\x00" not in stored
        stored.encode("utf-8")  # PostgreSQL can hold it
        assert restore_text(stored) == text
    assert stored_text(None) is None
    assert restore_text(None) is None
    assert stored_text("plain") == "plain"  # only what PostgreSQL refuses is escaped


def test_odd_identities_times_and_durations_still_land(pg_url: str, sink: PostgresSink) -> None:
    base = BufferedRow(*trail(1)[0])
    rows = [
        base._replace(seq=1, event_id="not-hex"),
        base._replace(seq=2, event_id=None),  # type: ignore[arg-type]
        base._replace(seq=3, timestamp="2026-01-05T10:00:00Z"),
        base._replace(seq=4, timestamp="2026-01-05T10:00:00"),
        base._replace(seq=5, timestamp="2026-01-05T12:00:00.500000+02:00"),
        base._replace(seq=6, timestamp="yesterday"),
        base._replace(seq=7, execution_time_ms="12.5"),  # type: ignore[arg-type]
        base._replace(seq=8, execution_time_ms="slow"),  # type: ignore[arg-type]
        base._replace(seq=9, tool_name=b"blob"),  # type: ignore[arg-type]
    ]
    rows = [r._replace(event_id=r.event_id if r.seq < 3 else uuid.uuid4().hex) for r in rows]
    sink.send(REPLICA, rows, GENESIS)
    sink.send(REPLICA, rows, GENESIS)  # derived event ids are stable: still no duplicates
    assert count(pg_url) == 9
    got = {
        seq: rest
        for seq, *rest in query(
            pg_url, "SELECT seq, timestamp, execution_time_ms, tool_name FROM audit_logs"
        )
    }

    utc = timezone.utc
    assert got[3][0] == datetime(2026, 1, 5, 10, tzinfo=utc)
    assert got[4][0] == datetime(2026, 1, 5, 10, tzinfo=utc)
    assert got[5][0] == datetime(2026, 1, 5, 10, 0, 0, 500000, tzinfo=utc)
    assert got[6][0] == datetime(1970, 1, 1, tzinfo=utc)
    assert (float(got[7][1]), got[8][1]) == (12.5, None)
    assert got[9][2] == "b'blob'"
    ids = query(pg_url, "SELECT event_id FROM audit_logs WHERE seq IN (1, 2)")
    assert len({i[0] for i in ids}) == 2


# ---------------------------------------------------------------- all or nothing
def test_a_row_the_server_rejects_fails_the_whole_batch(pg_url: str, sink: PostgresSink) -> None:
    rows = trail(40)
    sink.send(REPLICA, rows[:1], GENESIS)  # schema and partitions in place
    query(pg_url, "ALTER TABLE audit_logs ADD CONSTRAINT test_only CHECK (seq <> 30)")
    with pytest.raises(AuditStorageError, match="test_only"):
        sink.send(REPLICA, rows[1:], rows[0].row_hash or GENESIS)
    assert count(pg_url) == 1
    assert replica_row(pg_url)[5:] == (1, 1)
    query(pg_url, "ALTER TABLE audit_logs DROP CONSTRAINT test_only")
    sink.send(REPLICA, rows[1:], rows[0].row_hash or GENESIS)
    assert count(pg_url) == 40
    assert replica_row(pg_url)[5:] == (40, 40)


def test_a_connection_killed_mid_send_leaves_nothing_and_the_next_send_reconnects(
    pg_url: str, sink: PostgresSink
) -> None:
    from finops_audit.storage._pg_schema import ADVISORY_LOCK_KEY

    rows = trail(200)
    sink.send(REPLICA, rows[:1], GENESIS)
    with psycopg.connect(pg_url) as holder:
        holder.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")  # the id lock
        thread, errors = run_in_thread(
            lambda: sink.send(REPLICA, rows[1:], rows[0].row_hash or GENESIS)
        )

        def waiting() -> list[Any]:
            return holder.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = "
                "'finops-audit forwarder' AND wait_event_type = 'Lock' "
                "AND wait_event = 'advisory'"
            ).fetchall()

        wait_for(lambda: bool(waiting()))  # staged, and waiting for the lock
        holder.execute("SELECT pg_terminate_backend(%s)", (waiting()[0][0],))
        thread.join(timeout=60)
        assert not thread.is_alive()
        holder.rollback()
    assert len(errors) == 1
    assert isinstance(errors[0], AuditStorageError)
    assert "cannot forward 199 rows to PostgreSQL at" in str(errors[0])
    assert count(pg_url) == 1
    sink.send(REPLICA, rows[1:], rows[0].row_hash or GENESIS)
    assert count(pg_url) == 200
    assert replica_row(pg_url)[5:] == (200, 200)


@pytest.mark.slow
def test_the_sink_reconnects_after_the_server_restarted(tmp_path: Path) -> None:
    from finops_audit._pgserver import find_pg_bin, temporary_postgres

    if find_pg_bin() is None:
        if os.environ.get("CI") or os.environ.get("FINOPS_REQUIRE_PG"):
            pytest.fail("PostgreSQL server binaries not found (required in CI)")
        pytest.skip("PostgreSQL server binaries not found")
    rows = trail(30)
    with temporary_postgres() as server:
        sink = PostgresSink(server.dsn, CHAINER, connect_timeout=2)
        try:
            sink.send(REPLICA, rows[:10], GENESIS)
            server.stop("fast")
            with pytest.raises(AuditStorageError):
                sink.send(REPLICA, rows[10:20], prev_of(rows, 10))
            with pytest.raises(AuditStorageError, match="cannot connect to PostgreSQL"):
                sink.send(REPLICA, rows[10:20], prev_of(rows, 10))  # still down
            server.start()
            server.wait_ready()
            sink.send(REPLICA, rows[10:20], prev_of(rows, 10))
            sink.send(REPLICA, rows[20:], prev_of(rows, 20))
        finally:
            sink.close()
        assert count(server.dsn) == 30
        assert replica_row(server.dsn)[5:] == (30, 30)
        assert assert_chain(server.dsn) == 30


# ---------------------------------------------------------------- secrets
@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://audit:s3cret@db:5432/trail", "postgresql://audit:***@db:5432/trail"),
        ("postgresql://audit@db/trail", "postgresql://audit@db/trail"),
        ("postgresql://db/trail", "postgresql://db/trail"),
        ("postgres://a:p%40ss@h1:5432,h2:5433/t", "postgres://a:***@h1:5432,h2:5433/t"),
        (
            "postgresql://audit@db/trail?sslmode=require&password=s3cret",
            "postgresql://audit@db/trail?sslmode=require&password=***",
        ),
        ("host=db user=audit password=s3cret dbname=t", "host=db user=audit password=*** dbname=t"),
        ("host=db password='se cret' dbname=t", "host=db password=*** dbname=t"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://audit:TopSecret42@127.0.0.1:{port}/trail",
        "postgresql://audit:Top%53ecret42@127.0.0.1:{port}/trail",
        "postgresql://audit@127.0.0.1:{port}/trail?password=TopSecret42",
        "host=127.0.0.1 port={port} user=audit password=TopSecret42 dbname=trail",
        "postgresql://audit:TopSecret42@127.0.0.1:{port}/trail?bogus_option=TopSecret42",
        "host=127.0.0.1 password=TopSecret42 port=notaport",
    ],
)
def test_a_refused_connection_names_the_target_without_its_password(url: str) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = PostgresSink(url.format(port=port), CHAINER, connect_timeout=2)
    with pytest.raises(AuditStorageError) as caught:
        sink.send(REPLICA, trail(1), GENESIS)
    text = str(caught.value)
    assert "TopSecret42" not in text
    assert "Top%53ecret42" not in text
    assert text.startswith("cannot connect to PostgreSQL at ")
    assert "TopSecret42" not in sink.describe()
    assert "TopSecret42" not in repr(sink)
    cause = caught.value.__cause__
    assert cause is None or "TopSecret42" not in str(cause)
    sink.close()
