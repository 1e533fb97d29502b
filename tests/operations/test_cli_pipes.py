"""The CLI as a real process in a real terminal (a pty of 80, 100 and 200 columns) and in
real pipes: plain text, quiet ends when the reader goes away, and errors that name files."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.cells import cell_len

from finops_audit import AuditService, audit_tool_sync

from ._util import cli_env, no_traceback, run_cli
from ._wide import BOX_DRAWING, ROWS, SGR, many_rows, write_wide_trail

CLI = [sys.executable, "-m", "finops_audit.cli"]
#: What a shell reports for a command ended by a closed pipe, as for ``git log | head``.
SIGPIPE_STATUS = 141
#: Cursor and screen control that rich may send a terminal, besides colours.
CONTROL = re.compile(r"\x1b\[\?25[lh]|\r")


def in_terminal(*args: str, cwd: Path, columns: int) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a new pty ``columns`` wide."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = cli_env(TERM="xterm-256color")
    for name in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [*CLI, *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has gone
                break
            if not data:
                break
            chunks.append(data)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return status, CONTROL.sub("", SGR.sub("", b"".join(chunks).decode()))


@pytest.fixture
def wide_db(db_path: Path) -> Path:
    write_wide_trail(db_path)
    return db_path


@pytest.mark.parametrize("columns", [80, 100, 200])
def test_a_real_terminal_shows_every_identifying_value_whole(
    tmp_path: Path, wide_db: Path, columns: int
) -> None:
    for command in (["logs"], ["tail", "-n", "5"], ["stats", "--since", "3650d"]):
        status, out = in_terminal(*command, "--db", str(wide_db), cwd=tmp_path, columns=columns)
        assert status == 0, out
        no_traceback(out)
        lines = out.splitlines()
        assert all(cell_len(line) <= columns for line in lines), (command, out)
        text = "\n".join(lines)
        for row in ROWS:
            if command[0] == "stats":
                assert f"{row.ms:.3f}" in text
                assert row.tool in text
            else:
                [line] = [line for line in lines if line.startswith(str(row.id))]
                assert line.split()[:6] == [str(row.id), *row.time.split(), *row.fixed[2:]]
        if command[0] == "logs":
            assert "parameters" in text
            assert "error" in text


def test_piped_output_is_plain_text(tmp_path: Path, wide_db: Path) -> None:
    for command in (["logs"], ["tail", "-n", "5"], ["stats", "--since", "3650d"]):
        done = run_cli(*command, "--db", str(wide_db), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert not BOX_DRAWING.search(done.stdout), done.stdout
        assert "\x1b" not in done.stdout
        for row in ROWS:
            assert row.tool in done.stdout
            assert f"{row.ms:.3f}" in done.stdout
    demo = run_cli("demo", "--db", str(tmp_path / "demo.db"), "--calls", "200", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert not BOX_DRAWING.search(demo.stdout + demo.stderr)
    assert "\x1b" not in demo.stdout + demo.stderr
    assert demo.stdout.splitlines()[-3].startswith("  finops-audit logs")


@pytest.fixture
def big_db(db_path: Path) -> Path:
    """3,000 entries: any of the outputs below is larger than a pipe's buffer."""
    write_wide_trail(db_path, many_rows(3000))
    return db_path


@pytest.mark.parametrize(
    "command",
    [
        ["logs", "--json", "--limit", "3000"],
        ["logs", "--limit", "3000"],
        ["logs", "--csv", "--limit", "3000"],
        ["tail", "-n", "3000"],
        ["export", "-"],
        ["export", "-", "--format", "csv"],
    ],
    ids=" ".join,
)
def test_a_reader_that_stops_early_ends_the_command_quietly(
    tmp_path: Path, big_db: Path, command: list[str]
) -> None:
    env = cli_env()
    env.pop("PYTHONUNBUFFERED")
    with subprocess.Popen(
        [*CLI, *command, "--db", str(big_db)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline()  # like head -1
        proc.stdout.close()
        err = proc.stderr.read().decode()
        status = proc.wait(timeout=60)
    assert (status, err) == (SIGPIPE_STATUS, "")


@pytest.mark.parametrize("command", ["logs --json --limit 3000", "export -"])
def test_a_shell_pipeline_into_head(tmp_path: Path, big_db: Path, command: str) -> None:
    line = f"{sys.executable} -m finops_audit.cli {command} --db {big_db} | head -1"
    done = subprocess.run(
        ["bash", "-c", f'{line}; echo "status=${{PIPESTATUS[0]}}" >&2'],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr == f"status={SIGPIPE_STATUS}\n"


def read_line(fd: int, pending: bytearray, timeout: float = 15.0) -> str:
    """The next line from a pipe, waiting at most ``timeout`` seconds for it."""
    deadline = time.monotonic() + timeout
    while b"\n" not in pending:
        left = deadline - time.monotonic()
        assert left > 0, f"no line within {timeout}s: {bytes(pending)!r}"
        if select.select([fd], [], [], left)[0]:
            data = os.read(fd, 65536)
            assert data, f"the pipe ended: {bytes(pending)!r}"
            pending.extend(data)
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line.decode()


def test_tail_follow_in_a_pipe_shows_each_entry_then_stops_when_the_reader_does(
    tmp_path: Path, db_path: Path
) -> None:
    env = cli_env()
    env.pop("PYTHONUNBUFFERED")  # as in a user's shell: stdout is block-buffered in a pipe
    with AuditService(db_path) as service:

        @audit_tool_sync(name="watched", service=service)
        def watched(i: int) -> int:
            return i

        watched(0)
        service.flush()
        with subprocess.Popen(
            [*CLI, "tail", "-f", "-n", "1", "--interval", "0.05", "--db", str(db_path)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stderr is not None
            try:
                fd, pending = proc.stdout.fileno(), bytearray()
                assert '{"i": 0}' in read_line(fd, pending)
                watched(1)
                service.flush()
                assert '{"i": 1}' in read_line(fd, pending)  # now, not when a buffer fills
                proc.stdout.close()  # the reader goes away; the next entry ends the tail
                for i in range(2, 300):
                    watched(i)
                    service.flush()
                    try:
                        proc.wait(timeout=0.1)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                assert proc.wait(timeout=30) == SIGPIPE_STATUS
                assert proc.stderr.read() == b""
            finally:
                if proc.poll() is None:
                    proc.kill()


# ---------------------------------------------------------------------- errors


NOT_SQLITE = b"hello, this is a text file and not a database\n" * 40


@pytest.mark.parametrize(
    "command",
    [
        ["logs"],
        ["tail"],
        ["stats"],
        ["export", "-"],
        ["verify"],
        ["backup", "copy.db"],
        ["purge", "--older-than", "1d", "--yes"],
    ],
    ids=" ".join,
)
def test_an_error_names_the_file_and_a_reader_never_speaks_of_writing(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "notsqlite.db"
    path.write_bytes(NOT_SQLITE)
    done = run_cli(*command, "--db", str(path), cwd=tmp_path)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("Error: ")
    assert "notsqlite.db" in line
    if command[0] in ("logs", "tail", "stats", "export", "verify"):
        assert "writ" not in line.lower()
        assert "retried" not in line
    assert path.read_bytes() == NOT_SQLITE
    assert not (tmp_path / "copy.db").exists()


@pytest.mark.parametrize("value", ["banana", "24", "-3h", "99999999999d", "0h"])
def test_a_bad_since_shows_both_accepted_forms(tmp_path: Path, db_path: Path, value: str) -> None:
    with AuditService(db_path) as service:
        service.count()
    for command in ("logs", "stats", "tail", "export"):
        extra = ["-"] if command == "export" else []
        done = run_cli(command, *extra, "--db", str(db_path), "--since", value, cwd=tmp_path)
        no_traceback(done.stderr)
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line == (
            f"Error: since={value!r} is not an ISO-8601 time (e.g. 2026-11-28T04:00:00Z) "
            "nor an age such as 30m, 24h or 7d"
        )


@pytest.mark.parametrize(
    ("age", "words"),
    [
        ("1d", "1 day"),
        ("90d", "90 days"),
        ("1h30m", "1 hour 30 minutes"),
        ("36h", "1 day 12 hours"),
    ],
)
def test_the_purge_prompt_reads_as_words(
    tmp_path: Path, db_path: Path, age: str, words: str
) -> None:
    with AuditService(db_path) as service:
        service.count()
    done = subprocess.run(
        [*CLI, "purge", "--db", str(db_path), "--older-than", age],
        cwd=tmp_path,
        env=cli_env(),
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1  # declined
    assert done.stdout.startswith(f"Delete audit entries older than {words} from {db_path}? ")
