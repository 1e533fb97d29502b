"""The ``finops-audit`` CLI through click's CliRunner, on real SQLite files."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from finops_audit import AuditLogEntry, AuditService, audit_tool_sync
from finops_audit.cli import main
from tests.helpers import disk_count, disk_rows, wait_until

from ._util import mode, no_traceback

FIELDS = list(AuditLogEntry.model_fields)


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", **(env or {})})
    result = runner.invoke(main, list(args), input=input, catch_exceptions=False)
    no_traceback(result.output, result.stderr)
    return result


def ok(*args: str, **kwargs: str) -> Result:
    result = invoke(*args, **kwargs)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ids(text: str) -> list[int]:
    return [int(row["id"]) for row in json_lines(text)]  # type: ignore[call-overload]


# ---------------------------------------------------------------------- logs


def test_logs_table_shows_newest_entries(db_path: Path, trail: list[AuditLogEntry]) -> None:
    out = ok("logs", "--db", str(db_path)).stdout
    assert f"{len(trail)} audit entries, newest first" in out
    for name in ("list_policies", "check_tags", "estimate_cost"):
        assert name in out
    assert "ValueError: unknown region mars-1" in out
    assert "FAILURE" in out
    assert "SUCCESS" in out
    assert out.index("us-west-2") < out.index("eu-west-3")  # newest first


def test_logs_json_lines_carry_every_field(db_path: Path, trail: list[AuditLogEntry]) -> None:
    rows = json_lines(ok("logs", "--db", str(db_path), "--json").stdout)
    assert [r["id"] for r in rows] == [e.id for e in reversed(trail)]
    for row, entry in zip(rows, reversed(trail), strict=True):
        assert list(row) == FIELDS
        assert AuditLogEntry.model_validate(row) == entry


def test_logs_csv_header_and_rows(db_path: Path, trail: list[AuditLogEntry]) -> None:
    out = ok("logs", "--db", str(db_path), "--csv", "--limit", "3").stdout
    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames == FIELDS
    rows = list(reader)
    newest = list(reversed(trail))[:3]
    assert [int(r["id"]) for r in rows] == [e.id for e in newest]
    for row, entry in zip(rows, newest, strict=True):
        assert row["tool_name"] == entry.tool_name
        assert json.loads(row["parameters"]) == entry.parameters
        assert row["status"] == entry.status.value
        assert row["user"] == entry.user
        assert row["error_message"] == (entry.error_message or "")


def test_json_and_csv_together_is_a_usage_error(db_path: Path, trail: list[AuditLogEntry]) -> None:
    result = invoke("logs", "--db", str(db_path), "--json", "--csv")
    assert result.exit_code == 2
    assert "choose one of --json and --csv" in result.stderr


def test_logs_filters(db_path: Path, trail: list[AuditLogEntry]) -> None:
    db = ("--db", str(db_path), "--json", "--limit", "100")
    newest_first = [e.id for e in reversed(trail)]

    def expect(predicate: object) -> list[int]:
        return [e.id for e in reversed(trail) if predicate(e)]  # type: ignore[operator]

    assert ids(ok("logs", *db, "--tool", "check_tags").stdout) == expect(
        lambda e: e.tool_name == "check_tags"
    )
    for status in ("FAILURE", "failure"):
        assert ids(ok("logs", *db, "--status", status).stdout) == expect(
            lambda e: e.status.value == "FAILURE"
        )
    assert ids(ok("logs", *db, "--user", "bob").stdout) == expect(lambda e: e.user == "bob")
    assert ids(ok("logs", *db, "--value", "eu-west-3").stdout) == [trail[0].id]
    assert ids(ok("logs", *db, "--value", "nowhere").stdout) == []
    assert ids(ok("logs", *db, "--tool", "check_tags", "--user", "alice").stdout) == expect(
        lambda e: e.tool_name == "check_tags" and e.user == "alice"
    )
    # ISO bounds are inclusive
    since, until = trail[2].timestamp.isoformat(), trail[5].timestamp.isoformat()
    assert ids(ok("logs", *db, "--since", since).stdout) == newest_first[: len(trail) - 2]
    assert ids(ok("logs", *db, "--until", until).stdout) == newest_first[len(trail) - 6 :]
    assert ids(ok("logs", *db, "--since", since, "--until", until).stdout) == [
        e.id for e in reversed(trail[2:6])
    ]
    z = trail[2].timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert ids(ok("logs", *db, "--since", z).stdout) == newest_first[: len(trail) - 2]
    # ages: everything was written within the last day, nothing before it
    assert ids(ok("logs", *db, "--since", "24h").stdout) == newest_first
    assert ids(ok("logs", *db, "--until", "1d").stdout) == []
    # paging
    page = ("--db", str(db_path), "--json")
    assert ids(ok("logs", *page, "--limit", "3").stdout) == newest_first[:3]
    assert ids(ok("logs", *page, "--limit", "3", "--offset", "3").stdout) == newest_first[3:6]
    assert ids(ok("logs", *page, "--offset", "100").stdout) == []


def test_logs_default_limit_is_20(db_path: Path) -> None:
    with AuditService(db_path) as service:

        @audit_tool_sync(service=service)
        def ping(i: int) -> int:
            return i

        for i in range(25):
            ping(i)
    assert ids(ok("logs", "--db", str(db_path), "--json").stdout) == list(range(25, 5, -1))


def test_db_from_environment(tmp_path: Path, db_path: Path, trail: list[AuditLogEntry]) -> None:
    result = ok("logs", "--json", env={"AUDIT_DB_PATH": str(db_path)})
    assert len(json_lines(result.stdout)) == len(trail)


# ---------------------------------------------------------------------- tail


def test_tail_prints_the_last_n_oldest_first(db_path: Path, trail: list[AuditLogEntry]) -> None:
    got = ids(ok("tail", "--db", str(db_path), "-n", "3", "--json").stdout)
    assert got == [e.id for e in trail[-3:]]
    text = ok("tail", "--db", str(db_path), "-n", "2").stdout
    lines = text.splitlines()
    assert len(lines) == 2
    assert "check_tags" in lines[0]
    assert "FAILURE" in lines[0]
    assert "mars-1" in lines[0]
    assert "estimate_cost" in lines[1]
    assert "SUCCESS" in lines[1]
    assert (
        ids(ok("tail", "--db", str(db_path), "-n", "2", "--tool", "check_tags", "--json").stdout)
        == [e.id for e in trail if e.tool_name == "check_tags"][-2:]
    )
    assert ok("tail", "--db", str(db_path), "-n", "0").stdout == ""


def test_tail_follow_prints_entries_written_meanwhile(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process follow: a writer thread adds entries once ``tail -f`` is polling."""
    following = threading.Event()
    iter_logs = AuditService.iter_logs

    def spy(self: AuditService, *args: object, **kwargs: object) -> Iterator[AuditLogEntry]:
        following.set()  # tail has shown the initial entries and polls for new ones
        return iter_logs(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AuditService, "iter_logs", spy)
    with AuditService(db_path) as service:

        @audit_tool_sync(name="live", service=service)
        def live(i: int) -> int:
            return i

        live(0)
        service.flush()
        done = threading.Event()

        def write() -> None:
            if following.wait(10):
                for i in range(1, 4):
                    live(i)
                service.flush()
                done.set()

        writer = threading.Thread(target=write)
        writer.start()
        args = ["tail", "--db", str(db_path), "-n", "1", "-f", "--interval", "0.05"]
        result = CliRunner().invoke(
            main, [*args, "--exit-after", "1.5", "--json"], catch_exceptions=False
        )
        writer.join(10)
    assert done.is_set()
    assert result.exit_code == 0, result.output
    assert [r["parameters"] for r in json_lines(result.stdout)] == [{"i": i} for i in range(4)]


# ---------------------------------------------------------------------- stats


def test_stats_tables_name_every_tool(db_path: Path, trail: list[AuditLogEntry]) -> None:
    out = ok("stats", "--db", str(db_path)).stdout
    for name in ("list_policies", "check_tags", "estimate_cost"):
        assert name in out
    assert "Per-tool calls and latency" in out
    assert "slowest calls" in out
    assert "ValueError: unknown region mars-1" in out
    assert "Calls per 1h" in out


def test_stats_json_has_the_four_sections(db_path: Path, trail: list[AuditLogEntry]) -> None:
    doc = json.loads(ok("stats", "--db", str(db_path), "--json", "--bucket", "1m").stdout)
    assert set(doc) == {"tools", "slowest_calls", "errors", "calls_over_time"}
    calls = {t["tool_name"]: (t["calls"], t["failures"]) for t in doc["tools"]}
    assert calls == {"list_policies": (3, 0), "check_tags": (3, 2), "estimate_cost": (2, 0)}
    assert len(doc["slowest_calls"]) == len(trail)
    assert [(g["tool_name"], g["count"]) for g in doc["errors"]] == [("check_tags", 2)]
    assert sum(b["calls"] for b in doc["calls_over_time"]) == len(trail)
    only = json.loads(
        ok("stats", "--db", str(db_path), "--json", "--tool", "estimate_cost", "--top", "1").stdout
    )
    assert [t["tool_name"] for t in only["tools"]] == ["estimate_cost"]
    assert len(only["slowest_calls"]) == 1


def test_stats_of_an_empty_window(db_path: Path, trail: list[AuditLogEntry]) -> None:
    assert "No calls in this window" in ok("stats", "--db", str(db_path), "--until", "1d").stdout


# ---------------------------------------------------------------------- export


def test_export_jsonl_oldest_first_private(
    tmp_path: Path, db_path: Path, trail: list[AuditLogEntry]
) -> None:
    out = tmp_path / "out.jsonl"
    result = ok("export", "--db", str(db_path), str(out))
    assert f"exported {len(trail)} entries" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [AuditLogEntry.model_validate(r) for r in rows] == trail
    assert mode(out) == 0o600


def test_export_csv_by_suffix_and_by_format(
    tmp_path: Path, db_path: Path, trail: list[AuditLogEntry]
) -> None:
    for out, extra in ((tmp_path / "out.csv", ()), (tmp_path / "out.txt", ("--format", "csv"))):
        ok("export", "--db", str(db_path), str(out), *extra)
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        assert [int(r["id"]) for r in rows] == [e.id for e in trail]
        assert [json.loads(r["parameters"]) for r in rows] == [e.parameters for e in trail]
        assert mode(out) == 0o600


def test_export_filters_and_stdout(db_path: Path, trail: list[AuditLogEntry]) -> None:
    result = ok("export", "--db", str(db_path), "-", "--status", "FAILURE")
    assert ids(result.stdout) == [e.id for e in trail if e.status.value == "FAILURE"]
    assert "exported" not in result.stdout
    csv_out = ok("export", "--db", str(db_path), "-", "--format", "csv", "--tool", "check_tags")
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert [int(r["id"]) for r in rows] == [e.id for e in trail if e.tool_name == "check_tags"]


def test_export_of_more_than_one_page(tmp_path: Path, db_path: Path) -> None:
    with AuditService(db_path, batch_size=5000, queue_size=20_000) as service:

        @audit_tool_sync(service=service)
        def ping(i: int) -> int:
            return i

        for i in range(12_001):
            ping(i)
    out = tmp_path / "all.jsonl"
    ok("export", "--db", str(db_path), str(out))
    got = [json.loads(line)["parameters"]["i"] for line in out.read_text().splitlines()]
    assert got == list(range(12_001))


# ---------------------------------------------------------------------- purge


def _write(service: AuditService, name: str, count: int) -> None:
    @audit_tool_sync(name=name, service=service)
    def tool(i: int) -> int:
        return i

    for i in range(count):
        tool(i)
    service.flush()


def _wait_older_than(db_path: Path, seconds: float) -> None:
    """Bounded poll on the clock until the newest row is older than ``seconds``."""
    newest = max(r["timestamp"] for r in disk_rows(db_path))
    born = datetime.fromisoformat(newest)
    wait_until(lambda: datetime.now(timezone.utc) - born > timedelta(seconds=seconds))


def test_purge_older_than_keeps_a_verifiable_trail(db_path: Path) -> None:
    with AuditService(db_path) as service:
        _write(service, "old", 5)
        _wait_older_than(db_path, 1.2)
        _write(service, "new", 2)
        result = ok("purge", "--db", str(db_path), "--older-than", "1s", "--yes")
        assert "purged 5 entries in 1 batches (through id 5)" in result.stdout
        assert [r["tool_name"] for r in disk_rows(db_path)] == ["new", "new"]
        report = service.verify()
        assert (report.ok, report.rows_checked, report.checkpoint_through_id) == (True, 2, 5)
        _write(service, "after", 3)  # the chain goes on from the survivors
        assert service.verify().ok
    verified = ok("verify", "--db", str(db_path)).stdout
    assert "OK: 5 entries verified, after a purge through id 5" in verified


def test_purge_everything_then_write_again(db_path: Path) -> None:
    with AuditService(db_path) as service:
        _write(service, "old", 4)
        _wait_older_than(db_path, 0.05)
        report = service.purge(timedelta(milliseconds=10))
        assert (report.rows_deleted, report.through_id) == (4, 4)
        assert disk_count(db_path) == 0
        empty = service.verify()
        assert (empty.ok, empty.rows_checked) == (True, 0)
        _write(service, "new", 3)
        again = service.verify()
        assert (again.ok, again.rows_checked, again.checkpoint_through_id) == (True, 3, 4)
        assert [r["id"] for r in disk_rows(db_path)] == [5, 6, 7]


def test_purge_nothing_old(db_path: Path, trail: list[AuditLogEntry]) -> None:
    assert (
        "purged 0 entries"
        in ok("purge", "--db", str(db_path), "--older-than", "90d", "--yes").stdout
    )
    assert disk_count(db_path) == len(trail)


def test_purge_asks_first(db_path: Path, trail: list[AuditLogEntry]) -> None:
    result = invoke("purge", "--db", str(db_path), "--older-than", "1s", input="n\n")
    assert result.exit_code == 1
    assert "Delete audit entries older than" in result.output
    assert disk_count(db_path) == len(trail)


# ---------------------------------------------------------------------- backup


def test_backup_copies_every_row_privately(
    tmp_path: Path, db_path: Path, trail: list[AuditLogEntry]
) -> None:
    dest = tmp_path / "copies" / "backup.db"
    result = ok("backup", "--db", str(db_path), str(dest))
    assert f"backed up {len(trail)} entries" in result.stdout
    assert mode(dest) == 0o600
    assert disk_rows(dest) == disk_rows(db_path)
    assert "OK: 8 entries verified" in ok("verify", "--db", str(dest)).stdout


def test_backup_refuses_an_existing_destination(
    tmp_path: Path, db_path: Path, trail: list[AuditLogEntry]
) -> None:
    dest = tmp_path / "taken.db"
    dest.write_bytes(b"precious")
    result = invoke("backup", "--db", str(db_path), str(dest))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: backup destination {dest} already exists"
    assert dest.read_bytes() == b"precious"


def test_backup_while_another_thread_writes(tmp_path: Path, db_path: Path) -> None:
    stop = threading.Event()
    with AuditService(db_path) as service:

        @audit_tool_sync(name="busy", service=service)
        def busy(i: int) -> int:
            return i

        def keep_writing() -> None:
            i = 0
            while not stop.is_set():
                busy(i)
                i += 1
                if i % 50 == 0:
                    service.flush()

        busy(-1)
        service.flush()  # the file exists (created by the service) before anyone polls it
        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            wait_until(lambda: disk_count(db_path) >= 500)
            before = disk_count(db_path)
            dest = tmp_path / "online.db"
            result = ok("backup", "--db", str(db_path), str(dest))
            wait_until(lambda: disk_count(db_path) >= before + 500)  # writers kept going
        finally:
            stop.set()
            writer.join(10)
        service.flush()
        total = disk_count(db_path)
    copied = disk_count(dest)
    assert before <= copied <= total
    assert f"backed up {copied:,} entries" in result.stdout
    assert mode(dest) == 0o600
    assert [r["id"] for r in disk_rows(dest)] == list(range(1, copied + 1))
    assert "OK:" in ok("verify", "--db", str(dest)).stdout


# ---------------------------------------------------------------------- user mistakes


def _one_error_line(result: Result) -> str:
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_database(tmp_path: Path) -> None:
    for command in (["logs"], ["tail"], ["stats"], ["verify"], ["export", "-"], ["backup", "x.db"]):
        result = invoke(*command, "--db", "nope.db")
        assert result.exit_code == 1
        assert result.stderr == (
            "Error: no audit database at nope.db (set --db or AUDIT_DB_PATH)\n"
        )
    assert not (tmp_path / "nope.db").exists()  # reading never creates a trail
    assert not (tmp_path / "audit_logs.db").exists()
    result = invoke("logs")  # no --db, no AUDIT_DB_PATH: the default file
    assert "no audit database at audit_logs.db" in _one_error_line(result)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["purge", "--older-than", "9x", "--yes"], "--older-than='9x' is not a duration"),
        (["purge", "--older-than", "0s", "--yes"], "must be positive"),
        (["logs", "--since", "tomorrow"], "since='tomorrow' is not an ISO-8601"),
        (["logs", "--until", "soon"], "until='soon' is not an ISO-8601"),
        (["logs", "--since", "1h", "--until", "2h"], "is after until"),
        (["logs", "--status", "bogus"], "Invalid value for '--status'"),
        (["logs", "--limit", "0"], "limit=0 must be at least 1"),
        (["logs", "--limit", "abc"], "Invalid value for '--limit'"),
        (["tail", "--since", "tomorrow"], "since='tomorrow'"),
        (["stats", "--bucket", "x"], "bucket='x' is not a duration"),
        (["export", "-", "--since", "tomorrow"], "since='tomorrow'"),
    ],
)
def test_user_mistakes_give_one_clear_error(
    db_path: Path, trail: list[AuditLogEntry], args: list[str], needle: str
) -> None:
    result = invoke(*args, "--db", str(db_path))
    assert needle in _one_error_line(result)
    assert disk_count(db_path) == len(trail)


def test_bad_setting_in_environment(db_path: Path, trail: list[AuditLogEntry]) -> None:
    result = invoke("logs", "--db", str(db_path), env={"AUDIT_BATCH_SIZE": "lots"})
    assert "AUDIT_BATCH_SIZE='lots' is invalid" in _one_error_line(result)


def test_export_to_a_missing_folder(db_path: Path, trail: list[AuditLogEntry]) -> None:
    result = CliRunner().invoke(main, ["export", "--db", str(db_path), "/nonexistent/out.jsonl"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "/nonexistent/out.jsonl" in _one_error_line(result)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 200)
    result = CliRunner().invoke(main, ["logs", "--db", str(notes)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "notes.txt" in _one_error_line(result)


def test_backup_into_a_path_under_a_file(
    tmp_path: Path, db_path: Path, trail: list[AuditLogEntry]
) -> None:
    (tmp_path / "file.txt").write_text("x")
    result = CliRunner().invoke(
        main, ["backup", "--db", str(db_path), str(tmp_path / "file.txt" / "b.db")]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "file.txt" in _one_error_line(result)
