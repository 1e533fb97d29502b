"""Regenerate the generated regions of README.md and docs/ from the code and from real runs.

The settings table comes from ``AuditSettings``' fields, the CLI reference from the
click commands, the schema from a real trail's ``sqlite_master``, and every console
block from running the command it shows, in a throw-away folder holding a trail made
by the example server's own tools. So none of them can drift from the code::

    .venv/bin/python docs/_gen.py            # rewrite every region in place
    .venv/bin/python docs/_gen.py --check    # exit 1 naming each region that drifted

A region is the text between ``<!-- gen:NAME -->`` and ``<!-- /gen:NAME -->``.
``--check`` (run by ``tests/docs/test_generated.py``) compares console output after
masking what differs between runs: digits (times, ids, durations) and long hex
strings (event ids, hashes), and ignoring spacing and table borders.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REGION = re.compile(
    r"(<!-- gen:(?P<name>[\w:.-]+) -->\n)(?P<body>.*?)(<!-- /gen:(?P=name) -->)", re.S
)
#: Console width the shown output is rendered at.
COLUMNS = "100"

# ------------------------------------------------------------------ the example trail


class _Registry:
    """Stands in for an MCP server: ``tool()`` keeps the audited wrapper, as the SDKs do."""

    def __init__(self) -> None:
        self.tools: dict[str, Callable[..., Any]] = {}

    def tool(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.tools[fn.__name__] = fn
            return fn

        return register


def make_example_trail() -> None:
    """Call the example server's four tools in the current folder's ``audit_logs.db``.

    The calls are the ones a client session makes in ``docs/guides/mcp-servers.md``:
    the tools are the server's own functions, audited by its own decorators; only the
    MCP transport is left out (so the caller fields of an MCP session stay empty).
    """
    from finops_audit import audit_context, get_default_service

    spec = importlib.util.spec_from_file_location(
        "finops_server_example", ROOT / "examples" / "finops_server" / "server.py"
    )
    assert spec is not None
    assert spec.loader is not None
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    registry = _Registry()
    server._make_server = lambda sdk: registry  # the transport is not what is shown here
    server.build_server("docs")
    tools = registry.tools

    async def session() -> None:
        await tools["check_tag_compliance"](resource_types=["ec2_instance"])
        await tools["check_tag_compliance"](policy_name="strict", region="us-east-1")
        await tools["check_tag_compliance"]()
        tools["find_untagged_resources"](tag_key="owner", limit=3)
        tools["get_tag_policy"](policy_name="strict")
        with audit_context(user="alice@example.com", ticket="FIN-42"):
            await tools["estimate_untagged_cost"](account_id="111122223333", currency="EUR")
            for bad in ("999999999999",):
                try:
                    await tools["estimate_untagged_cost"](account_id=bad)
                except ValueError:
                    pass
        try:
            await tools["check_tag_compliance"](policy_name="legacy")
        except ValueError:
            pass
        try:
            tools["get_tag_policy"](policy_name="legacy")
        except ValueError:
            pass

    asyncio.run(session())
    get_default_service().close()


# ------------------------------------------------------------------ generated regions


def _default(field: Any) -> str:
    if field.default_factory is not None or field.default is None:
        return "(none)"
    value = field.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer() and value >= 1000:
        value = int(value)
    return f"`{value}`"


def settings_table() -> str:
    """Every ``AuditSettings`` field: its variable, its default, its description."""
    from finops_audit.config import ENV_PREFIX, AuditSettings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in AuditSettings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {_default(field)} | {meaning} |")
    return "\n".join(rows) + "\n"


def _option_row(param: click.Parameter) -> str:
    names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    help_text = (getattr(param, "help", None) or "").replace("|", "\\|")
    if isinstance(param.type, click.Choice):
        names += " `CHOICE`"
        choices = ", ".join(f"`{c}`" for c in param.type.choices)
        help_text = f"One of {choices}. {help_text}".strip()
    elif not (isinstance(param, click.Option) and param.is_flag):
        names += f" `{param.type.name.upper()}`"
    default = param.default
    unset = type(default).__name__ == "Sentinel"  # click 8.2+: no default given
    shown = (
        "" if unset or default is None or default is False or callable(default) else f"`{default}`"
    )
    return f"| {names} | {shown} | {help_text} |"


def cli_reference() -> str:
    """Every ``finops-audit`` command, its arguments and options, from the click objects."""
    from finops_audit.cli import main

    out: list[str] = []
    ctx = click.Context(main, info_name="finops-audit")
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None
        sub = click.Context(command, info_name=name, parent=ctx)
        usage = " ".join(command.collect_usage_pieces(sub))
        out += [f"### `finops-audit {name}`", "", f"```text\nfinops-audit {name} {usage}\n```", ""]
        out += [inspect.cleandoc(command.help or ""), ""]  # 3.13 dedents docstrings itself
        rows = [
            _option_row(p)
            for p in command.params
            if isinstance(p, click.Option) and p.name != "help"
        ]
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        for arg in arguments:
            out += [f"Argument `{(arg.name or '').upper()}`: required.", ""]
        if rows:
            out += ["| option | default | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(out)


def schema() -> str:
    """The SQLite schema of a trail, as SQLite itself reports it."""
    from finops_audit import AuditService

    with tempfile.TemporaryDirectory() as tmp:
        with AuditService(db_path=Path(tmp) / "audit.db", handle_signals=False) as svc:
            svc.flush()
            svc.count()
        import sqlite3

        db = sqlite3.connect(Path(tmp) / "audit.db")
        try:
            sql = [
                row[0]
                for row in db.execute(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
                )
            ]
        finally:
            db.close()
    return "```sql\n" + ";\n\n".join(sql) + ";\n```\n"


#: Console blocks: the shell lines shown, each run in a folder holding the example trail.
CONSOLE: dict[str, list[str]] = {
    "failure-json": [
        "finops-audit logs --status failure --limit 1 --json | python3 -m json.tool",
    ],
    "logs-user": ["finops-audit logs --user alice@example.com --json"],
    "tail": ["finops-audit tail -n 3"],
    "stats": ["finops-audit stats --tool check_tag_compliance --top 3"],
    "user-errors": [
        "finops-audit logs --db missing.db",
        "finops-audit purge --older-than 9x --yes",
        "finops-audit logs --status maybe",
    ],
    "maintenance": [
        "finops-audit purge --older-than 90d --yes",
        "finops-audit backup backups/audit.db",
        "finops-audit export trail.jsonl",
        "finops-audit verify",
        "sqlite3 audit_logs.db \"UPDATE audit_logs SET status = 'SUCCESS', error_message = NULL "
        'WHERE id = 9"   # hide a failure',
        'finops-audit verify; echo "exit status $?"',
    ],
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUDIT_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", COLUMNS=COLUMNS, NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    return env


_TRAIL: list[Path] = []


def _example_trail() -> Path:
    """A folder holding the example trail, made once per run of this script."""
    if not _TRAIL:
        folder = Path(tempfile.mkdtemp(prefix="finops-audit-docs-"))
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--make-trail"],
            cwd=folder,
            env=_env(),
            check=True,
        )
        _TRAIL.append(folder / "audit_logs.db")
    return _TRAIL[0]


def _run_console(lines: list[str]) -> str:
    env = _env()
    out: list[str] = []
    trail = _example_trail()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(trail, Path(tmp) / trail.name)
        for line in lines:
            done = subprocess.run(
                ["bash", "-c", "{ " + line + "\n} 2>&1"],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            out.append(f"$ {line}\n{done.stdout}{done.stderr}")
    return "```console\n" + "".join(out) + "```\n"


def _needs(lines: list[str]) -> list[str]:
    """Programs a console block calls that this machine lacks."""
    return [
        p for p in ("sqlite3",) if any(ln.startswith(p) for ln in lines) and not shutil.which(p)
    ]


def generate(name: str) -> str:
    """The text of region ``name``."""
    if name == "settings":
        return settings_table()
    if name == "cli":
        return cli_reference()
    if name == "schema":
        return schema()
    if name.startswith("console:"):
        return _run_console(CONSOLE[name.removeprefix("console:")])
    raise KeyError(f"no generator for region {name!r}")


# ------------------------------------------------------------------ files and checks


def documents() -> list[Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def regions(text: str) -> Iterator[re.Match[str]]:
    return REGION.finditer(text)


_HEX = re.compile(r"\b[0-9a-f]{16,}\b")
_DIGITS = re.compile(r"\d+")
_SPLIT = re.compile(r"[\s\u2500-\u257f]+")


def normalise(text: str) -> list[str]:
    """The words of ``text`` with what differs between runs masked."""
    masked = _DIGITS.sub("0", _HEX.sub("HEX", text))
    return [w for w in _SPLIT.split(masked) if w]


def check() -> list[str]:
    """Each region whose text differs from a fresh generation (masked for console runs)."""
    drifted = []
    for path in documents():
        for m in regions(path.read_text(encoding="utf-8")):
            name = m["name"]
            if name.startswith("console:") and _needs(CONSOLE[name.removeprefix("console:")]):
                continue
            fresh = generate(name)
            same = (
                normalise(fresh) == normalise(m["body"])
                if name.startswith("console:")
                else fresh == m["body"]
            )
            if not same:
                drifted.append(f"{path.relative_to(ROOT)}: gen:{name}")
    return drifted


def rewrite() -> None:
    cache: dict[str, str] = {}
    for path in documents():
        text = path.read_text(encoding="utf-8")

        def fill(m: re.Match[str]) -> str:
            name = m["name"]
            if name not in cache:
                cache[name] = generate(name)
            if name.startswith("console:") and normalise(cache[name]) == normalise(m["body"]):
                return m.group(0)  # only times and ids differ: keep the text, no churn
            return m.group(1) + cache[name] + m.group(4)

        new = REGION.sub(fill, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    if argv == ["--make-trail"]:
        make_example_trail()
        return 0
    if argv == ["--check"]:
        drifted = check()
        for line in drifted:
            print(f"drifted: {line} (run: python docs/_gen.py)")
        return 1 if drifted else 0
    if argv:
        print(__doc__)
        return 2
    rewrite()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
