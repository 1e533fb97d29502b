"""Benchmark 9: the dashboard (issue 13) on a 1,000,000-row trail, and what it costs the tools.

* ``test_api_1m``: each API call the page makes, through the ASGI app in
  process (Starlette's test client), on a read-only service over the session's
  1M-row trail (30 days, ten tools). The issue's bound is 200 ms for every call
  except ``tools`` over the whole trail (``tool_stats``), which the page loads
  asynchronously; its time is measured here and stated in the docs.
* ``test_tool_overhead_with_ten_streams``: audited sync calls paced at 1,000 a
  second, with no dashboard and then with the dashboard served from the same
  process (uvicorn in a thread) and 10 SSE streams held open by another
  process, alternating, in the same run. ``extra_info`` has the median caller
  overhead (wall time of one audited call) and the CPU per call of the whole
  process in each phase, their ratios, the entries the streams received, and
  the process's RSS before and after the streaming phases.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
import uvicorn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx.*")
    from starlette.testclient import TestClient

from _support import COMMON_TOOL, RARE_TOOL, BigTrail
from finops_audit import AuditService, audit_tool_sync
from finops_audit.dashboard import create_app

TOKEN = "bench-token-0123456789abcdef"


@pytest.fixture(scope="module")
def dashboard_client(big_trail: BigTrail) -> Iterator[TestClient]:
    svc = AuditService(db_path=big_trail.path, read_only=True, handle_signals=False)
    app = create_app(svc, token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        client.get("/api/logs?limit=1")  # opens the reader outside the timed calls
        yield client
    svc.close()


def _cases(trail: BigTrail) -> dict[str, str]:
    middle = (trail.start_us + trail.end_us) // 2 // 1_000_000
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle + 3600))
    last = trail.rows
    return {
        "page": "/",
        "logs": "/api/logs?limit=100",
        "logs-tool-rare": f"/api/logs?limit=100&tool={RARE_TOOL}",
        "logs-failures": "/api/logs?limit=100&status=FAILURE",
        "logs-1h": f"/api/logs?limit=100&since={since}&until={until}",
        "poll-after-id": f"/api/logs?after_id={last - 50}&limit=100",
        "entry": f"/api/logs/{last // 2}",
        "timeline-24h": "/api/timeline?since=24h",
        "timeline-whole": "/api/timeline",
        "errors-24h": "/api/errors?since=24h",
        "errors-whole": "/api/errors",
        "slowest-24h": "/api/slowest?since=24h",
        "slowest-whole": "/api/slowest",
        "health": "/api/health",
        "tools-24h": "/api/tools?since=24h",
        "tools-1h": f"/api/tools?since={since}&until={until}",
        "tools-one-tool": f"/api/tools?tool={COMMON_TOOL}",
        "tools-whole": "/api/tools",
    }


CASES = [
    "page",
    "logs",
    "logs-tool-rare",
    "logs-failures",
    "logs-1h",
    "poll-after-id",
    "entry",
    "timeline-24h",
    "timeline-whole",
    "errors-24h",
    "errors-whole",
    "slowest-24h",
    "slowest-whole",
    "health",
    "tools-24h",
    "tools-1h",
    "tools-one-tool",
    "tools-whole",
]


@pytest.mark.benchmark(group="9-dashboard-api-1M")
@pytest.mark.parametrize("case", CASES)
def test_api_1m(
    benchmark: Any, big_trail: BigTrail, dashboard_client: TestClient, case: str
) -> None:
    url = _cases(big_trail)[case]

    def call() -> int:
        response = dashboard_client.get(url)
        assert response.status_code == 200, response.text
        return len(response.content)

    slow = case.endswith("whole")
    size = benchmark.pedantic(call, rounds=5 if slow else 30, warmup_rounds=1)
    benchmark.extra_info.update(url=url, rows=big_trail.rows, response_bytes=size)


# ---------------------------------------------------------------------- tools' overhead

STREAMS = """
import sys, threading, httpx
url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
counts = [0] * n
stop = threading.Event()
def reader(i):
    with httpx.Client(timeout=None) as client:
        with client.stream("GET", url, headers={"Authorization": "Bearer " + token}) as r:
            for line in r.iter_lines():
                if line.startswith("id:"):
                    counts[i] += 1
                if stop.is_set():
                    return
threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
for t in threads:
    t.start()
print("open", flush=True)
sys.stdin.readline()
print(sum(counts), min(counts), flush=True)
"""

RATE = 1_000
PHASE_CALLS = 4_000


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _phase(tool: Any, calls: int) -> tuple[float, float]:
    """(median ns of one call, CPU µs per call of the whole process) at RATE calls/s."""
    period = 1.0 / RATE
    clock = time.perf_counter
    ns = time.perf_counter_ns
    durations = []
    cpu0 = time.process_time()
    t0 = clock()
    for i in range(calls):
        a = ns()
        tool(account_id="123456789012", region="eu-west-1", i=i)
        durations.append(ns() - a)
        delay = t0 + (i + 1) * period - clock()
        if delay > 0:
            time.sleep(delay)
    cpu = time.process_time() - cpu0
    return statistics.median(durations), cpu / calls * 1e6


def test_tool_overhead_with_ten_streams(benchmark: Any, tmp_path: Path) -> None:
    svc = AuditService(db_path=tmp_path / "audit.db", handle_signals=False)

    @audit_tool_sync(service=svc, name="get_cost_breakdown")
    def tool(**kwargs: Any) -> int:
        return len(kwargs)

    tool(warm=True)
    svc.flush()
    app = create_app(svc, token=TOKEN)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    config.timeout_graceful_shutdown = 1
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    results: dict[str, list[tuple[float, float]]] = {"none": [], "streams": []}
    received = ""
    rss: list[int] = []

    def run() -> None:
        nonlocal received
        results["none"].append(_phase(tool, PHASE_CALLS))
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        script = tmp_path / "streams.py"
        script.write_text(textwrap.dedent(STREAMS))
        readers = subprocess.Popen(
            [sys.executable, str(script), f"http://127.0.0.1:{port}/api/stream", TOKEN, "10"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert readers.stdout is not None
        assert readers.stdin is not None
        assert readers.stdout.readline().strip() == "open"
        while app.state.poller.streams < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        rss.append(_rss_kib())
        for _ in range(2):
            results["streams"].append(_phase(tool, PHASE_CALLS))
            rss.append(_rss_kib())
        svc.flush()
        time.sleep(1.0)  # lets the last poll reach the streams; only the count is read
        readers.stdin.write("\n")
        readers.stdin.flush()
        received = readers.stdout.readline().strip()
        readers.wait(30)
        readers.stdin.close()
        readers.stdout.close()
        server.should_exit = True
        thread.join(30)
        results["none"].append(_phase(tool, PHASE_CALLS))

    benchmark.pedantic(run, rounds=1, iterations=1)
    none_ns = statistics.median(r[0] for r in results["none"])
    none_cpu = statistics.median(r[1] for r in results["none"])
    with_ns = statistics.median(r[0] for r in results["streams"])
    with_cpu = statistics.median(r[1] for r in results["streams"])
    benchmark.extra_info.update(
        rate=RATE,
        calls_per_phase=PHASE_CALLS,
        caller_ns_no_dashboard=none_ns,
        caller_ns_ten_streams=with_ns,
        caller_ratio=with_ns / none_ns,
        cpu_us_per_call_no_dashboard=none_cpu,
        cpu_us_per_call_ten_streams=with_cpu,
        cpu_ratio=with_cpu / none_cpu,
        entries_received_total_and_min_per_stream=received,
        rss_kib_before_after_streaming=rss,
    )
    svc.close()


def test_first_page_1m(benchmark: Any, big_trail: BigTrail) -> None:
    """Time from navigation to the entries, the chart and the per-tool table on 1M rows.

    Debian's chromium through Playwright, the page served by uvicorn in this
    process from a read-only service. ``tools`` (last 24 h by default) loads
    asynchronously and is timed on its own.
    """
    import os

    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is missing")
    svc = AuditService(db_path=big_trail.path, read_only=True, handle_signals=False)
    app = create_app(svc, token=TOKEN)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    config.timeout_graceful_shutdown = 1
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/?token={TOKEN}"
    times: dict[str, list[float]] = {"entries": [], "chart": [], "tools": []}
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)

        def load() -> None:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            t0 = time.perf_counter()
            page.goto(url)
            page.locator("#logs tbody tr").nth(99).wait_for(state="attached", timeout=60_000)
            times["entries"].append(time.perf_counter() - t0)
            page.locator("#chart svg rect.calls").first.wait_for(state="attached", timeout=60_000)
            times["chart"].append(time.perf_counter() - t0)
            page.locator("#tools tbody tr").first.wait_for(state="attached", timeout=60_000)
            times["tools"].append(time.perf_counter() - t0)
            page.close()

        load()  # warm-up: the reader connection and the browser's first start
        for key in times:
            times[key].clear()
        benchmark.pedantic(load, rounds=5, iterations=1)
        browser.close()
    server.should_exit = True
    thread.join(30)
    svc.close()
    benchmark.extra_info.update(
        {f"{k}_median_s": statistics.median(v) for k, v in times.items()}, rows=big_trail.rows
    )
