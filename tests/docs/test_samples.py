"""Every Python block of README.md and docs/ runs, so no sample can lie.

The blocks of one page run in order in one namespace, in the test's fresh folder
with no ``AUDIT_*`` variable (the autouse fixture), as a reader would paste them
into one session; top-level ``await`` is allowed. Blocks marked ``requires:`` run
alone, where their module is importable; ``skip:`` blocks are listed here.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
from typing import Any

import pytest

from tests.docs._blocks import Block, blocks, documents, fences

#: Every ``<!-- skip: ... -->`` block, as "path:line" -> reason. Keep it short.
SKIPPED: dict[str, str] = {}

_ALL = [b for doc in documents() for b in blocks(doc)]
_PAGES = sorted({b.path for b in _ALL if b.kind is None})


def _run(block: Block, namespace: dict[str, Any]) -> None:
    code = compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_the_docs_have_python_blocks_and_no_other_python_fences() -> None:
    assert len(_ALL) >= 15
    for doc in documents():
        odd = {f for f in fences(doc) if f in {"py", "python3", "pycon", "ipython"}}
        assert not odd, f"{doc}: use ```python so the block is run: {odd}"


def test_every_skip_is_listed() -> None:
    found = {b.id: b.arg for b in _ALL if b.kind == "skip"}
    assert found == SKIPPED


@pytest.mark.parametrize("page", _PAGES)
def test_page_blocks_run_in_order(page: str) -> None:
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for block in (b for b in _ALL if b.path == page and b.kind is None):
        _run(block, namespace)


_REQUIRING = [b for b in _ALL if b.kind == "requires"]


@pytest.mark.parametrize("block", _REQUIRING, ids=[b.id for b in _REQUIRING])
def test_blocks_needing_a_module_run_where_it_is(
    block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert block.arg is not None
    if block.arg == "postgres":
        dsn = request.getfixturevalue("pg_admin_dsn")
        monkeypatch.setenv("AUDIT_DB_URL", dsn)
    elif not _importable(block.arg):
        pytest.skip(f"{block.arg} is not installed (pip install -e '.[fastmcp]' or '.[mcp]')")
    _run(block, {"__name__": "__docs__"})
