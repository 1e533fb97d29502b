"""The generated regions of the docs match the code and real runs (docs/_gen.py --check).

The settings table must equal what ``AuditSettings`` declares, the CLI reference what
the click commands declare, the schema what a new trail holds; console output must
match a fresh run of the command shown, times, ids and spacing aside.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.docs._blocks import ROOT


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "docs" / "_gen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_gen", module)
    spec.loader.exec_module(module)
    return module


def test_settings_table_lists_every_setting() -> None:
    from finops_audit import AuditSettings

    table = _gen().settings_table()
    for name in AuditSettings.model_fields:
        assert f"| `AUDIT_{name.upper()}` |" in table


def test_every_region_has_a_generator() -> None:
    gen = _gen()
    names = {m["name"] for doc in gen.documents() for m in gen.regions(doc.read_text())}
    assert {"settings", "cli", "schema"} <= names
    for name in names:
        if name.startswith("console:"):
            assert name.removeprefix("console:") in gen.CONSOLE


def test_normalise_masks_times_ids_and_spacing_only() -> None:
    gen = _gen()
    a = "│ 12 │ 2026-12-06 00:01:02.345 │ get_tag_policy │ 0.012 │ 3f9a0c1d2e3f4a5b6c7d │"
    b = "│  7 │ 2026-12-07 10:11:12.000 │ get_tag_policy │ 10.5 │ 0011aabbccddeeff0011 │"
    assert gen.normalise(a) == gen.normalise(b)
    assert gen.normalise(a) != gen.normalise(a.replace("get_tag_policy", "get_policy"))


@pytest.mark.slow
def test_generated_regions_match_the_code_and_real_runs() -> None:
    assert _gen().check() == []
