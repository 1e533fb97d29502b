"""Print the mutation score per module from mutmut's results (``mutants/**/*.meta``).

Why this exists: ``mutmut results`` lists survivors one by one; the issue asks
for a score per module and overall. Run it from the project root after
``mutmut run`` (``tox -e mutation`` runs it last).

A mutant counts as killed when a test failed, the run timed out (the mutant
hung the writer: a test noticed) or the type checker refused it. The score is
killed / checked, where "not checked" (the run was interrupted) and "skipped"
are left out. "no tests" counts against the score: no selected test reached
the mutated function. Exit status 1 when the overall score is under
``--fail-under`` (default 0: report only).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# mutmut 3's exit codes (mutmut/stats.py): what each means for the score.
_KILLED = {1, 3, 36, 37, 24, -24, 152, 255}  # failed, pytest error, timeout, type check
_IGNORED = {None, 2, 34}  # not checked, interrupted, skipped
_LABEL = {0: "survived", 5: "no tests", 33: "no tests", 35: "suspicious", -11: "segfault"}


def _status(code: int | None) -> str:
    if code in _KILLED:
        return "killed"
    if code in _IGNORED:
        return "not checked"
    return _LABEL.get(code, "suspicious") if code is not None else "not checked"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--fail-under", type=float, default=0.0, metavar="PERCENT")
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants too")
    args = parser.parse_args(argv)

    metas = sorted(args.mutants.rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {args.mutants}/: run `mutmut run` first", file=sys.stderr)
        return 2
    total: Counter[str] = Counter()
    survivors: list[str] = []
    print(f"{'module':<48} {'killed':>7} {'checked':>8} {'score':>7}  other")
    for meta in metas:
        codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        counts: Counter[str] = Counter(_status(code) for code in codes.values())
        survivors += [
            name
            for name, code in codes.items()
            if _status(code) != "killed" and _status(code) != "not checked"
        ]
        total += counts
        checked = sum(n for status, n in counts.items() if status != "not checked")
        module = str(meta.relative_to(args.mutants)).removesuffix(".meta")
        print(_row(module, counts, checked))
    checked = sum(n for status, n in total.items() if status != "not checked")
    print(_row("overall", total, checked))
    if args.survivors:
        print("\n".join(["", "survivors:", *sorted(survivors)]))
    score = 100.0 * total["killed"] / checked if checked else 0.0
    return 1 if score < args.fail_under else 0


def _row(module: str, counts: Counter[str], checked: int) -> str:
    score = f"{100.0 * counts['killed'] / checked:.1f}%" if checked else "-"
    other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != "killed" and n)
    return f"{module:<48} {counts['killed']:>7} {checked:>8} {score:>7}  {other}"


if __name__ == "__main__":
    sys.exit(main())
