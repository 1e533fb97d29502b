"""README.md stays a page a newcomer reads to the end, and every link in it leads somewhere."""

from __future__ import annotations

import re

from tests.docs._blocks import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")

#: The two set-up commands; .ci/run runs the second one verbatim.
SET_UP = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/finops-audit demo",
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest",
)


def test_readme_is_short() -> None:
    assert len(README.splitlines()) <= 200


def test_readme_keeps_both_set_up_commands_verbatim() -> None:
    for command in SET_UP:
        assert f"\n{command}\n" in README
    assert SET_UP[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_links_lead_to_files_and_headings_that_exist() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#([\w-]+))?\)", README)
    local = [(target, anchor) for target, anchor in links if "://" not in target]
    assert local, "the README links to the documentation pages"
    for target, anchor in local:
        path = ROOT / target
        assert path.is_file(), f"README links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{target} has no heading #{anchor}"


def test_readme_cites_no_file_that_is_not_in_the_repository() -> None:
    """A file named in backquotes (``DESIGN.md`` once was not) is in the repository."""
    cited = re.findall(r"`([\w./-]+\.(?:md|py|toml|ini|json))`", README)
    assert "docs/_gen.py" in cited
    folders = [ROOT, *(ROOT / d for d in ("docs", "src", "examples", "benchmarks", "tests"))]
    for name in cited:
        if "/" in name:
            assert (ROOT / name).exists(), name
        else:
            assert any((f / name).exists() or any(f.rglob(name)) for f in folders), name
