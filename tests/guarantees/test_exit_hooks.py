"""The writer's lifecycle hooks belong to whoever registers them (issue 12 §4).

At interpreter exit every running writer drains first, then the hooks
registered with ``_lifecycle.on_exit`` run in order (the forwarders register
their own ``close_all`` there); the writer's modules import no forwarding code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import finops_audit
from tests.guarantees._support import child_env, run, write_script

WRITER_MODULES = (
    "_writer",
    "_writer_types",
    "_writer_state",
    "_handoff",
    "_wakeup",
    "_drain",
    "_faults",
    "_lifecycle",
    "_durable",
    "_deadlines",
)

EXIT_CHILD = """
import sqlite3, sys
from contextlib import closing
from finops_audit import AuditService, audit_tool_sync
from finops_audit._lifecycle import on_exit

db = sys.argv[1]
svc = AuditService(db_path=db, flush_interval=60)

@audit_tool_sync(service=svc)
def tool(n: int) -> int:
    return n

def first() -> None:
    with closing(sqlite3.connect(db)) as conn:
        print("first", conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0], flush=True)

def second() -> None:
    print("second", flush=True)

def broken() -> None:
    raise RuntimeError("a hook that fails")

on_exit(first)
on_exit(broken)
on_exit(second)
on_exit(first)  # registered once
for n in range(250):
    tool(n)
# no flush, no close: the exit hook drains the writer before the hooks run
"""


def test_exit_hooks_run_in_order_after_the_writers_drained(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    done = run(write_script(tmp_path, EXIT_CHILD), child_env(), str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["first 250", "second"]
    assert "a hook that fails" in done.stderr  # logged, and the next hook still ran


def _runtime_imports(path: Path) -> list[str]:
    """Modules imported outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                found.append("." * child.level + (child.module or ""))
            elif isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            visit(child)

    visit(tree)
    return found


def test_the_writer_imports_no_forwarding_code() -> None:
    package = Path(finops_audit.__file__).parent
    for name in WRITER_MODULES:
        imports = _runtime_imports(package / f"{name}.py")
        assert not [m for m in imports if "forwarding" in m], (name, imports)
