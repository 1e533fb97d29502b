"""Print the benchmark figures (issues 2, 5, 6, 12) as a markdown table: medians, ratios, targets.

Usage::

    pytest benchmarks --benchmark-only --benchmark-json=bench.json
    python benchmarks/summarize.py bench.json [more runs.json ...]
    python benchmarks/summarize.py --compare before-1.json before-2.json -- after-1.json ...

Every figure is a median, set against a baseline measured in the same run.
Given several runs' JSON, each figure's row is the one of the run whose ratio
(the number its verdict is made from) is the median over the runs, every
run's value listed beside it: one noisy run moves nothing, and each ratio is
still one to a baseline measured in the same run. ``--compare`` prints before
and after side by side, each chosen so.
Benchmarks missing from the JSON (a partial run) are reported as "not run".
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Bench = dict[str, Any]

OVERHEAD_MAX_US = 2.0
OVERHEAD_MAX_SHARE_OF_QUEUEHANDLER = 0.25
#: Issue 12 raised it from 0.40 (at the default settings: redaction and chain on).
THROUGHPUT_MIN_SHARE_OF_RAW = 0.75
DRAIN_MAX_S = 1.0
QUERY_MAX_MS = 10.0
#: Issue 12: CPU per call at 1,000 calls/s against raw sqlite3 at the same cadence
#: (was an absolute 10 µs).
CPU_MAX_TIMES_RAW = 1.5
IDLE_MAX_MS_PER_S = 0.1
DURABLE_P50_MAX_TIMES_RAW = 1.5
DURABLE_MIN_SHARE_OF_DEFAULT = 0.5


def _load(path: Path) -> tuple[list[Bench], dict[str, Any]]:
    data = json.loads(path.read_text())
    return data.get("benchmarks", []), data


def _median_run(tables: list[Table]) -> Table:
    """One table from several runs: per figure, the run whose ratio is the median.

    A row's cells (measured, baseline, ratio) all come from that one run, so the
    ratio stays one to a baseline measured in the same run; the ratio cell lists
    every run's value, to show the spread.
    """
    out = Table()
    labels: dict[str, None] = {}
    for table in tables:
        labels.update(dict.fromkeys(row[0] for row in table.rows))
    for label in labels:
        runs = [(t.keys[label], t) for t in tables if label in t.keys]
        if not runs:
            rows = [row for t in tables for row in t.rows if row[0] == label]
            ran = [row for row in rows if row[1] != "not run"]
            out.add(*(ran or rows)[0])
            continue
        runs.sort(key=lambda kt: kt[0])
        key, table = runs[(len(runs) - 1) // 2]
        row = next(r for r in table.rows if r[0] == label)
        spread = ", ".join(f"{k:.3g}" for k, _ in runs)
        ratio = f"{row[3]} [runs: {spread}]".strip() if len(runs) > 1 else row[3]
        out.add(row[0], row[1], row[2], ratio, row[4], row[5], key=key)
    return out


def _find(benches: Iterable[Bench], **match: Any) -> Bench | None:
    for bench in benches:
        info = bench.get("extra_info", {})
        if all(info.get(k) == v for k, v in match.items()):
            return bench
    return None


def _median(bench: Bench) -> float:
    return float(bench["stats"]["median"])


def _per_call_us(bench: Bench) -> float:
    return _median(bench) / bench["extra_info"].get("calls_per_round", 1) * 1e6


def _verdict(ok: bool) -> str:
    return "✅ met" if ok else "❌ missed"


class Table:
    """Rows of cells; each row may carry ``key``, the number its verdict is made from."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.keys: dict[str, float] = {}

    def add(self, *cells: str, key: float | None = None) -> None:
        self.rows.append(cells)
        if key is not None and key == key:  # not NaN
            self.keys[cells[0]] = key

    def render(self) -> str:
        head = ("figure", "measured (median)", "in-run baseline", "ratio", "target", "")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def _missing(table: Table, what: str) -> None:
    table.add(what, "not run", "", "", "", "")


def overhead(benches: list[Bench], table: Table) -> None:
    for mode in ("sustained", "isolated"):
        qh = _find(benches, figure="overhead", mode=mode, role="queuehandler")
        qh_us = _per_call_us(qh) if qh else None
        for flavor in ("sync", "async"):
            base = _find(benches, figure="overhead", mode=mode, flavor=flavor, role="baseline")
            aud = _find(benches, figure="overhead", mode=mode, flavor=flavor, role="audited")
            label = f"1. caller overhead, {flavor}, {mode}"
            if base is None or aud is None:
                _missing(table, label)
                continue
            b_us, a_us = _per_call_us(base), _per_call_us(aud)
            over = a_us - b_us
            share = over / qh_us if qh_us else float("nan")
            ok = over <= OVERHEAD_MAX_US and (qh_us is None or share <= 0.25)
            table.add(
                label,
                f"{over:.2f} µs/call ({a_us:.2f} audited - {b_us:.2f} bare)",
                f"QueueHandler logging.info {qh_us:.2f} µs" if qh_us else "QueueHandler not run",
                f"{share:.3f} of QueueHandler",
                f"≤ {OVERHEAD_MAX_US:g} µs and ≤ {OVERHEAD_MAX_SHARE_OF_QUEUEHANDLER:g}",
                _verdict(ok),
                key=share if qh_us else over,
            )
    floor = _find(benches, figure="overhead", mode="sustained", role="floor")
    base = _find(benches, figure="overhead", mode="sustained", flavor="sync", role="baseline")
    if floor and base:
        over = _per_call_us(floor) - _per_call_us(base)
        table.add(
            "1. (reference) minimal hand-off, sync, sustained",
            f"{over:.2f} µs/call",
            "same bare call",
            "",
            "what this machine charges any design: 2 clocks, orjson, tuple, deque",
            "",
            key=over,
        )


def burst(benches: list[Bench], table: Table) -> None:
    """Issue 12: bursts at the default settings, against the bare call and QueueHandler."""
    sizes = sorted({b["extra_info"]["calls_per_round"] for b in benches if _is(b, "burst")}) or [
        1_000,
        10_000,
        50_000,
    ]
    for calls in sizes:
        qh = _find(benches, figure="burst", role="queuehandler", calls_per_round=calls)
        qh_us = _per_call_us(qh) if qh else None
        for flavor in ("sync", "async"):
            match = {"figure": "burst", "flavor": flavor, "calls_per_round": calls}
            base = _find(benches, role="bare", **match)
            aud = _find(benches, role="audited", **match)
            label = f"1b. caller overhead, {calls:,}-call burst, {flavor}, default settings"
            if base is None or aud is None:
                _missing(table, label)
                continue
            b_us, a_us = _per_call_us(base), _per_call_us(aud)
            over = a_us - b_us
            share = over / qh_us if qh_us else float("nan")
            ok = over <= OVERHEAD_MAX_US and qh_us is not None and share <= 0.25
            persist = aud["extra_info"].get("flush_after_burst_s_median")
            persisted = f"; on disk {persist * 1e3:.0f} ms after the burst" if persist else ""
            table.add(
                label,
                f"{over:.2f} µs/call ({a_us:.2f} audited - {b_us:.2f} bare{persisted})",
                f"QueueHandler logging.info {qh_us:.2f} µs" if qh_us else "QueueHandler not run",
                f"{share:.3f} of QueueHandler",
                f"≤ {OVERHEAD_MAX_US:g} µs and ≤ {OVERHEAD_MAX_SHARE_OF_QUEUEHANDLER:g}",
                _verdict(ok),
                key=share if qh_us else over,
            )


def _is(bench: Bench, figure: str) -> bool:
    return bool(bench.get("extra_info", {}).get("figure") == figure)


def throughput(benches: list[Bench], table: Table) -> None:
    raw = _find(benches, figure="throughput", role="raw")
    for flavor, options in (
        ("sync", "defaults"),
        ("async", "defaults"),
        ("sync", "plain"),
        ("async", "plain"),
    ):
        pipe = _find(benches, figure="throughput", role="pipeline", flavor=flavor, options=options)
        what = "redaction + hash chain on" if options == "defaults" else "both off"
        label = f"2. persisted throughput, {flavor} tool, {what}"
        if raw is None or pipe is None:
            _missing(table, label)
            continue
        raw_rate = raw["extra_info"]["rows_per_round"] / _median(raw)
        rate = pipe["extra_info"]["rows_per_round"] / _median(pipe)
        share = rate / raw_rate
        table.add(
            label,
            f"{rate:,.0f} calls/s persisted",
            f"raw executemany {raw_rate:,.0f} rows/s",
            f"{share:.0%} of raw",
            f"≥ {THROUGHPUT_MIN_SHARE_OF_RAW:.0%}",
            _verdict(share >= THROUGHPUT_MIN_SHARE_OF_RAW),
            key=share,
        )


def drain(benches: list[Bench], table: Table) -> None:
    raw = _find(benches, figure="drain", settings="raw")
    raw_s = _median(raw) if raw else None
    labels = {
        "all-pending": "3. close() with 100,000 pending (batch 100k: none written before)",
        "default-settings": "3. close() right after 100,000 calls (default settings)",
    }
    for settings, label in labels.items():
        bench = _find(benches, figure="drain", settings=settings)
        if bench is None:
            _missing(table, label)
            continue
        seconds = _median(bench)
        pending = bench["extra_info"].get("pending_at_close")
        note = f" ({statistics.median(pending):,.0f} still pending)" if pending else ""
        table.add(
            label,
            f"{seconds:.2f} s{note}",
            f"raw executemany of 100k rows {raw_s:.2f} s" if raw_s else "raw not run",
            f"{seconds / raw_s:.2f}x raw" if raw_s else "",
            f"< {DRAIN_MAX_S:g} s",
            _verdict(seconds < DRAIN_MAX_S),
            key=seconds,
        )


def queries(benches: list[Bench], table: Table) -> None:
    for case in ("tool-common", "tool-rare", "status-failure", "time-1h"):
        bench = _find(benches, figure="get_logs", case=case)
        label = f"4. get_logs {case}, 1M rows"
        if bench is None:
            _missing(table, label)
            continue
        ms = _median(bench) * 1e3
        plan = "; ".join(bench["extra_info"].get("plan", []))
        table.add(
            label,
            f"{ms:.2f} ms ({bench['extra_info'].get('rows_returned')} rows)",
            f"plan: {plan}",
            "",
            f"< {QUERY_MAX_MS:g} ms",
            _verdict(ms < QUERY_MAX_MS),
            key=ms,
        )


def cpu(benches: list[Bench], table: Table) -> None:
    def med(b: Bench, key: str) -> float:
        return float(b["extra_info"][key])

    for flavor in ("sync", "async"):
        base = _find(benches, figure="cpu", flavor=flavor, role="baseline")
        aud = _find(benches, figure="cpu", flavor=flavor, role="audited")
        label = f"5. CPU per call at 1,000 calls/s, {flavor}"
        if base is None or aud is None:
            _missing(table, label)
            continue
        raw = _find(benches, figure="cpu", flavor=flavor, role="raw")
        key = "cpu_us_per_call_median"
        extra = med(aud, key) - med(base, key)
        caller = med(aud, "caller_thread_cpu_us_per_call_median") - med(base, key)
        others = med(aud, "other_threads_cpu_us_per_call_median")
        measured = f"{extra:.1f} µs/call (caller thread {caller:+.1f}, writer threads {others:.1f})"
        loop = f"pacing loop alone {med(base, key):.1f} µs/call"
        if raw is None:
            table.add(label, measured, f"{loop}; raw not run", "", "", "")
            continue
        raw_extra = med(raw, key) - med(base, key)
        times = extra / raw_extra if raw_extra > 0 else float("inf")
        table.add(
            label,
            measured,
            f"raw sqlite3, 50 ms transactions, FULL: {raw_extra:.1f} µs/call (over the {loop})",
            f"{times:.2f}x raw",
            f"≤ {CPU_MAX_TIMES_RAW:g}x raw",
            _verdict(times <= CPU_MAX_TIMES_RAW),
            key=times,
        )


def idle(benches: list[Bench], table: Table) -> None:
    """Issue 12: a started service left idle, against the same idle stretch without one."""
    base = _find(benches, figure="idle", role="baseline")
    aud = _find(benches, figure="idle", role="audited")
    label = "6. idle CPU, a started service"
    if base is None or aud is None:
        _missing(table, label)
        return
    b, a = (float(x["extra_info"]["cpu_ms_per_s_median"]) for x in (base, aud))
    wb, wa = (float(x["extra_info"]["wakeups_per_s_median"]) for x in (base, aud))
    table.add(
        label,
        f"{a - b:.3f} ms CPU per s ({a:.3f} - {b:.3f}); {wa - wb:+.1f} wake-ups/s",
        f"no service: {b:.3f} ms/s, {wb:.1f} wake-ups/s "
        f"({aud['extra_info'].get('idle_seconds')} s idle)",
        "",
        f"< {IDLE_MAX_MS_PER_S:g} ms/s",
        _verdict(a - b < IDLE_MAX_MS_PER_S),
        key=a - b,
    )


def durable(benches: list[Bench], table: Table) -> None:
    """Issue 12: ``AUDIT_DURABILITY=commit``: latency against a bare commit, throughput."""
    raw = _find(benches, figure="durable-latency", role="raw")
    for flavor in ("sync", "async"):
        bench = _find(benches, figure="durable-latency", role="durable", flavor=flavor)
        label = f"8. durable call latency, {flavor}"
        if raw is None or bench is None:
            _missing(table, label)
            continue
        info, rinfo = bench["extra_info"], raw["extra_info"]
        p50, p99 = info["p50_us_median"], info["p99_us_median"]
        r50, r99 = rinfo["p50_us_median"], rinfo["p99_us_median"]
        table.add(
            label,
            f"p50 {p50:.0f} µs, p99 {p99:.0f} µs",
            f"one-row executemany + COMMIT (FULL): p50 {r50:.0f} µs, p99 {r99:.0f} µs",
            f"{p50 / r50:.2f}x (p99 {p99 / r99:.2f}x)",
            f"p50 ≤ {DURABLE_P50_MAX_TIMES_RAW:g}x",
            _verdict(p50 / r50 <= DURABLE_P50_MAX_TIMES_RAW),
            key=p50 / r50,
        )
    for callers in ("async-64", "threads-16"):
        base = _find(benches, figure="durable-concurrency", callers=callers, mode="default")
        dur = _find(benches, figure="durable-concurrency", callers=callers, mode="durable")
        label = f"8. durable throughput, {callers} callers"
        if base is None or dur is None:
            _missing(table, label)
            continue
        rate = dur["extra_info"]["rows_per_round"] / _median(dur)
        base_rate = base["extra_info"]["rows_per_round"] / _median(base)
        table.add(
            label,
            f"{rate:,.0f} calls/s (returned and committed)",
            f"default mode {base_rate:,.0f} calls/s (returned, then flush())",
            f"{rate / base_rate:.2f} of default",
            f"≥ {DURABLE_MIN_SHARE_OF_DEFAULT:g}",
            _verdict(rate / base_rate >= DURABLE_MIN_SHARE_OF_DEFAULT),
            key=rate / base_rate,
        )


def operations(benches: list[Bench], table: Table) -> None:
    """Issue 5: export and stats on 1,000,000 rows, against raw sqlite3 in the same run."""
    for case, baseline in (("export-jsonl", "raw-select-json"), ("tool-stats", "raw-group-by")):
        bench = _find(benches, figure="operations", case=case)
        base = _find(benches, figure="operations", case=baseline)
        label = f"5. {case} on 1M rows"
        if bench is None or base is None:
            _missing(table, label)
            continue
        extra = bench["extra_info"]
        memory = f", peak RSS +{extra['peak_mb']:.0f} MB" if "peak_mb" in extra else ""
        table.add(
            label,
            f"{_median(bench):.2f} s{memory}",
            f"{baseline} {_median(base):.2f} s",
            f"{_median(bench) / _median(base):.2f}x",
            "bounded memory" if case.startswith("export") else "in SQL",
            "",
            key=_median(bench) / _median(base),
        )


SECTIONS: tuple[Callable[[list[Bench], Table], None], ...] = (
    overhead,
    burst,
    throughput,
    drain,
    queries,
    cpu,
    idle,
    operations,
    durable,
)


def _table(benches: list[Bench]) -> Table:
    table = Table()
    for section in SECTIONS:
        section(benches, table)
    return table


def _runs(paths: list[str]) -> tuple[Table, dict[str, Any]]:
    loaded = [_load(Path(p)) for p in paths]
    data = dict(loaded[0][1]) if loaded else {}
    data["runs"] = len(loaded)
    return _median_run([_table(benches) for benches, _ in loaded]), data


def _header(data: dict[str, Any]) -> str:
    machine = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    runs = data.get("runs", 1)
    return (
        f"finops_audit benchmarks, {data.get('datetime', '?')}, "
        f"commit {str(commit.get('id', '?'))[:10]}{' (dirty)' if commit.get('dirty') else ''}, "
        f"Python {machine.get('python_version', '?')}, "
        f"{machine.get('cpu', {}).get('count', '?')} CPUs "
        f"({machine.get('cpu', {}).get('brand_raw', '?')})"
        + (f", the median of {runs} runs per figure" if runs > 1 else "")
    )


def compare(before: Table, after: Table) -> str:
    """Before and after, row by row (joined on the figure's label)."""
    old = {row[0]: row for row in before.rows}
    head = ("figure", "before", "after", "target", "before", "after")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(row: tuple[str, ...] | None) -> str:
        if row is None or row[1] == "not run":
            return "not run"
        return f"{row[1]}; baseline {row[2]}; **{row[3]}**" if row[3] else f"{row[1]}; {row[2]}"

    for row in after.rows:
        prev = old.get(row[0])
        target = row[4] or (prev[4] if prev else "")
        lines.append(
            "| "
            + " | ".join((row[0], cell(prev), cell(row), target, prev[5] if prev else "", row[5]))
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    if args[0] == "--compare":
        if "--" not in args:
            print(__doc__, file=sys.stderr)
            return 2
        split = args.index("--")
        before, before_data = _runs(args[1:split])
        after, after_data = _runs(args[split + 1 :])
        print(f"before: {_header(before_data)}\n\nafter: {_header(after_data)}\n")
        print(compare(before, after))
        return 0
    table, data = _runs(args)
    print(_header(data) + "\n")
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
