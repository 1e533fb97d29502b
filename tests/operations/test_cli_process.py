"""The CLI as a real process (``python -m finops_audit.cli`` and the ``finops-audit`` script),
and several writer processes sharing one file."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finops_audit import AuditLogEntry, AuditService, audit_tool_sync
from tests.helpers import disk_count, wait_until

from ._util import LineReader, cli_env, execute, no_traceback, run_cli


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "console-script"])
def test_logs_json(tmp_path: Path, db_path: Path, trail: list[AuditLogEntry], script: bool) -> None:
    done = run_cli(
        "logs", "--db", str(db_path), "--json", "--limit", "5", cwd=tmp_path, script=script
    )
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    rows = [AuditLogEntry.model_validate(json.loads(line)) for line in done.stdout.splitlines()]
    assert rows == list(reversed(trail))[:5]


def test_logs_table_and_filters(tmp_path: Path, db_path: Path, trail: list[AuditLogEntry]) -> None:
    done = run_cli("logs", "--db", str(db_path), "--status", "failure", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 audit entries, newest first" in done.stdout
    assert "unknown region mars-1" in done.stdout


def test_verify_ok_then_tampered(tmp_path: Path, db_path: Path, trail: list[AuditLogEntry]) -> None:
    done = run_cli("verify", "--db", str(db_path), cwd=tmp_path, script=True)
    assert (done.returncode, done.stdout.splitlines()[0], done.stderr) == (
        0,
        "OK: 8 entries verified",
        "",
    )
    execute(db_path, 'UPDATE audit_logs SET parameters = \'{"region": "eu-west-1"}\' WHERE id = 3')
    done = run_cli("verify", "--db", str(db_path), cwd=tmp_path)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("TAMPERED at id 3: ")
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["logs", "--db", "nope.db"], "Error: no audit database at nope.db"),
        (["verify", "--db", "nope.db"], "Error: no audit database at nope.db"),
        (["purge", "--db", "DB", "--older-than", "9x", "--yes"], "is not a duration"),
        (["logs", "--db", "DB", "--since", "tomorrow"], "is not an ISO-8601"),
    ],
)
def test_user_mistake_in_a_real_process(
    tmp_path: Path, db_path: Path, trail: list[AuditLogEntry], args: list[str], needle: str
) -> None:
    args = [str(db_path) if a == "DB" else a for a in args]
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 1
    no_traceback(done.stdout, done.stderr)
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert needle in line
    assert line.startswith("Error: ")
    assert not (tmp_path / "nope.db").exists()


def test_tail_follow_shows_entries_another_process_writes(tmp_path: Path, db_path: Path) -> None:
    with AuditService(db_path) as service:

        @audit_tool_sync(name="watched", service=service)
        def watched(i: int) -> int:
            return i

        for i in range(3):
            watched(i)
        service.flush()
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "finops_audit.cli",
                "tail",
                "--db",
                str(db_path),
                "-n",
                "2",
                "-f",
                "--interval",
                "0.1",
                "--exit-after",
                "1.5",
                "--json",
            ],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stderr is not None
            lines = LineReader(proc.stdout)
            try:
                first = [json.loads(line)["parameters"]["i"] for line in lines.take(2)]
                assert first == [1, 2]  # the last two, oldest first; now it follows
                for i in range(3, 6):
                    watched(i)
                service.flush()
                later = [json.loads(line)["parameters"]["i"] for line in lines.take(3)]
                assert later == [3, 4, 5]
                assert proc.wait(timeout=30) == 0  # --exit-after ends it
                assert lines.rest() == []
                no_traceback(proc.stderr.read())
            finally:
                if proc.poll() is None:
                    proc.kill()
                lines.rest()  # the pipe is drained before it is closed


WRITER = """
import sys, time
from pathlib import Path
from finops_audit import AuditService, audit_tool_sync

db, name, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
with AuditService(db, batch_size=7, queue_size=1000, synchronous="NORMAL") as service:
    @audit_tool_sync(name=name, service=service)
    def work(i: int) -> int:
        if i % 9 == 0:
            raise ValueError(f"{name} failed {i}")
        return i

    service.count()  # writer started, file open
    Path(f"{name}.ready").touch()
    deadline = time.monotonic() + 30
    while not Path("go").exists():  # start together, so the writes overlap
        assert time.monotonic() < deadline, "no go signal"
        time.sleep(0.005)
    for i in range(calls):
        try:
            work(i)
        except ValueError:
            pass
        if i % 5 == 0:
            service.flush()
"""


@pytest.mark.parametrize("hmac_key", [None, "k" * 32], ids=["unkeyed", "keyed"])
def test_three_writer_processes_build_one_verifiable_chain(
    tmp_path: Path, db_path: Path, hmac_key: str | None
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    env = cli_env(**({"AUDIT_HMAC_KEY": hmac_key} if hmac_key else {}))
    with AuditService(db_path, hmac_key=hmac_key) as service:
        assert service.count() == 0  # the file exists before the writers start
    names = [f"proc{n}" for n in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db_path), name, "300"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        wait_until(
            lambda: (
                all((tmp_path / f"{n}.ready").exists() for n in names)
                or any(p.poll() is not None for p in procs)
            ),
            timeout=30,
        )
    finally:
        (tmp_path / "go").touch()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        no_traceback(out, err)
    assert disk_count(db_path) == 900
    with AuditService(db_path, hmac_key=hmac_key) as service:
        report = service.verify()
        assert (report.ok, report.rows_checked, report.keyed) == (True, 900, hmac_key is not None)
        per_tool = {t.tool_name: (t.calls, t.failures) for t in service.tool_stats()}
        assert per_tool == dict.fromkeys(names, (300, 34))
        order = [e.tool_name for e in service.iter_logs()]
    # one chain of 900 consecutive ids, and the processes really took turns
    assert sum(a != b for a, b in itertools.pairwise(order)) > 2
    done = run_cli("verify", "--db", str(db_path), cwd=tmp_path, env=env)
    assert done.returncode == 0
    assert done.stdout.startswith("OK: 900 entries verified")
