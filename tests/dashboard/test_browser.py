"""A real browser (Debian's chromium through Playwright) drives ``finops-audit serve``.

The server is the CLI in its own process; audited calls come from other
processes; every wait is bounded and the assertion is that the thing appears.
Set ``FINOPS_DOCS_SCREENSHOTS=1`` to write docs/img/dashboard.png.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("playwright")

from playwright.sync_api import Browser, Page, expect, sync_playwright

from finops_audit import AuditService

from .conftest import ServeProcess, chromium_or_skip, record, standard_calls

CALLS = Path(__file__).with_name("calls.py")
ROOT = Path(__file__).resolve().parents[2]
#: Generous bound for a live row to appear (the issue's target is 1 s; CI machines are shared).
LIVE_BOUND_MS = 15_000
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_or_skip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def trail_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditService(db_path=path, handle_signals=False) as svc:
        record(svc, standard_calls())
    return path


@pytest.fixture
def dashboard(trail_file: Path, serve: Callable[..., ServeProcess]) -> ServeProcess:
    return serve("--db", str(trail_file))


class Opened:
    """A page with every request URL it made recorded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Opened]]:
    contexts: list[Any] = []

    def make(url: str, **options: Any) -> Opened:
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(**options)
        contexts.append(context)
        opened = Opened(context.new_page())
        opened.page.goto(url)
        return opened

    yield make
    for context in contexts:
        context.close()


def call_in_another_process(
    db: Path, tool: str, count: int, env: dict[str, str] | None = None
) -> None:
    out = subprocess.run(
        [sys.executable, str(CALLS), str(db), tool, str(count)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=True,
    )
    assert out.stdout.strip() == "done", out.stderr


def rows(page: Page, tool: str | None = None) -> Any:
    selector = "#logs tbody tr"
    return page.locator(selector).filter(has_text=tool) if tool else page.locator(selector)


def assert_stayed_local(opened: Opened, base: str) -> None:
    assert opened.requests
    strays = [url for url in opened.requests if not url.startswith(base + "/")]
    assert strays == [], strays
    assert base.startswith("http://127.0.0.1:")


def test_page_shows_rows_tools_chart_and_live_calls(
    dashboard: ServeProcess, open_page: Callable[..., Opened], trail_file: Path
) -> None:
    opened = open_page(dashboard.url)
    page = opened.page
    expect(rows(page)).to_have_count(46)
    assert "?token=" not in page.url  # the token left the address bar
    expect(page.locator("#tools tbody tr")).to_have_count(3)
    expect(page.locator('#tools tr[data-tool="get_costs"] td').nth(1)).to_have_text("35")
    expect(page.locator("#chart svg rect.calls").first).to_be_attached()
    expect(page.locator("#errors tbody tr")).to_have_count(1)
    expect(page.locator("#slowest tbody tr")).to_have_count(10)
    expect(page.locator("#live")).to_have_text("live")

    call_in_another_process(trail_file, "live_tool", 3)
    returned = time.monotonic()
    expect(rows(page, "live_tool")).to_have_count(3, timeout=LIVE_BOUND_MS)
    latency_ms = (time.monotonic() - returned) * 1000
    print(f"live rows appeared {latency_ms:.0f} ms after the calls returned")
    assert_stayed_local(opened, dashboard.base)


def test_pause_counts_new_rows_then_resume_shows_them(
    dashboard: ServeProcess, open_page: Callable[..., Opened], trail_file: Path
) -> None:
    page = open_page(dashboard.url).page
    expect(rows(page)).to_have_count(46)
    expect(page.locator("#live")).to_have_text("live")
    page.click("#pause")
    expect(page.locator("#live")).to_have_text("paused")
    call_in_another_process(trail_file, "while_paused", 4)
    expect(page.locator("#paused-count")).to_have_text("4 new", timeout=LIVE_BOUND_MS)
    assert rows(page, "while_paused").count() == 0
    page.click("#pause")  # resume
    expect(rows(page, "while_paused")).to_have_count(4)
    expect(page.locator("#paused-count")).to_be_hidden()
    call_in_another_process(trail_file, "after_resume", 1)
    expect(rows(page, "after_resume")).to_have_count(1, timeout=LIVE_BOUND_MS)


def test_filter_by_tool_in_the_ui_and_in_the_url(
    dashboard: ServeProcess, open_page: Callable[..., Opened], trail_file: Path
) -> None:
    opened = open_page(dashboard.url)
    page = opened.page
    expect(rows(page)).to_have_count(46)
    page.fill("#filters input[name=tool]", "find_untagged")
    page.click("#apply")
    expect(rows(page)).to_have_count(10)
    assert "tool=find_untagged" in page.url
    expect(page.locator("#tools tbody tr")).to_have_count(1)
    # Live entries of other tools do not show up in a filtered view; matching ones do.
    call_in_another_process(trail_file, "get_costs", 2)
    call_in_another_process(trail_file, "find_untagged", 2)
    expect(rows(page)).to_have_count(12, timeout=LIVE_BOUND_MS)
    expect(rows(page, "get_costs")).to_have_count(0)
    # The same view from its URL, shared with a colleague (same browser: the cookie holds).
    page.goto(f"{dashboard.base}/?tool=lookup&user=eve")
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#filters input[name=tool]")).to_have_value("lookup")
    # A click on a tool in the per-tool table filters by it.
    page.goto(f"{dashboard.base}/")
    page.click('#tools tr[data-tool="get_costs"]')
    expect(rows(page)).to_have_count(37)
    assert "tool=get_costs" in page.url
    # A bad filter says why, and shows no data instead of failing silently.
    page.goto(f"{dashboard.base}/?status=maybe")
    expect(page.locator("#filter-error")).to_contain_text("status")
    assert_stayed_local(opened, dashboard.base)


def test_open_one_entry(dashboard: ServeProcess, open_page: Callable[..., Opened]) -> None:
    page = open_page(dashboard.url).page
    row = rows(page, "lookup")
    expect(row).to_have_count(1)
    row.click()
    drawer = page.locator("#entry")
    expect(drawer).to_be_visible()
    expect(page.locator("#entry-params")).to_contain_text("DROP TABLE audit_logs")
    expect(page.locator("#entry-fields")).to_contain_text("eve")
    expect(page.locator("#entry-fields")).to_contain_text("trace id")
    page.click("#entry-close")
    expect(drawer).to_be_hidden()


def test_verify_button_and_health(
    dashboard: ServeProcess, open_page: Callable[..., Opened]
) -> None:
    page = open_page(dashboard.url).page
    expect(page.locator("#health")).to_contain_text("gap rows")
    page.click("#verify")
    expect(page.locator("#verify-result")).to_contain_text("ok: 46 rows")
    expect(page.locator("#health")).to_contain_text("ok: 46 rows")


def test_without_the_token_the_page_refuses(
    dashboard: ServeProcess, open_page: Callable[..., Opened]
) -> None:
    for url in (
        f"{dashboard.base}/",
        f"{dashboard.base}/?token=wrong",
        f"{dashboard.base}/api/logs",
    ):
        page = open_page(url).page
        text = page.locator("body").inner_text()
        assert "get_costs" not in text
        assert "eu-west-1" not in text
        if "/api/" not in url:
            expect(page.locator("h1")).to_have_text("Sign-in required")


@pytest.mark.parametrize(("width", "scheme"), [(1280, "light"), (1024, "light"), (1024, "dark")])
def test_usable_at_laptop_widths_in_light_and_dark(
    dashboard: ServeProcess, open_page: Callable[..., Opened], width: int, scheme: str
) -> None:
    opened = open_page(dashboard.url, viewport={"width": width, "height": 800}, color_scheme=scheme)
    page = opened.page
    expect(rows(page)).to_have_count(46)
    expect(page.locator("#tools tbody tr")).to_have_count(3)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(17, 20, 24)") == (scheme == "dark")
    assert_stayed_local(opened, dashboard.base)


@pytest.mark.skipif(
    os.environ.get("FINOPS_DOCS_SCREENSHOTS") != "1", reason="set FINOPS_DOCS_SCREENSHOTS=1"
)
def test_docs_screenshot(
    tmp_path: Path, serve: Callable[..., ServeProcess], open_page: Callable[..., Opened]
) -> None:
    """docs/img/dashboard.png: the demo's tools in a few bursts, a live call arriving."""
    path = tmp_path / "audit_logs.db"
    for calls in (900, 400, 1500, 700, 1200, 300, 1000, 600):
        demo = [sys.executable, "-m", "finops_audit.cli", "demo", "--db", str(path)]
        subprocess.run([*demo, "--calls", str(calls)], check=True, capture_output=True, timeout=120)
    server = serve("--db", str(path))
    page = open_page(server.url, viewport={"width": 1280, "height": 1500}).page
    expect(page.locator("#tools tbody tr").first).to_be_attached()
    expect(page.locator("#chart svg rect.calls").first).to_be_attached()
    call_in_another_process(path, "check_tag_compliance", 3)
    expect(rows(page).first).to_contain_text("check_tag_compliance", timeout=LIVE_BOUND_MS)
    page.hover("#chart svg", position={"x": 700, "y": 120})
    target = ROOT / "docs" / "img" / "dashboard.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))


def test_fleet_live_view_shows_two_replicas_through_postgresql(
    pg_url: str,
    tmp_path: Path,
    serve: Callable[..., ServeProcess],
    open_page: Callable[..., Opened],
) -> None:
    def replica(name: str) -> dict[str, str]:
        return {"AUDIT_DB_URL": pg_url, "AUDIT_REPLICA_ID": name}

    call_in_another_process(tmp_path / "a.db", "replica_a_tool", 3, replica("replica-a"))
    server = serve("--db", str(tmp_path / "viewer.db"), env={"AUDIT_DB_URL": pg_url})
    opened = open_page(server.url)
    page = opened.page
    expect(rows(page, "replica_a_tool")).to_have_count(3)
    expect(page.locator("#trail")).to_contain_text("(fleet)")
    expect(page.locator("#live")).to_have_text("live")
    call_in_another_process(tmp_path / "b.db", "replica_b_tool", 2, replica("replica-b"))
    expect(rows(page, "replica_b_tool")).to_have_count(2, timeout=LIVE_BOUND_MS)
    call_in_another_process(tmp_path / "a.db", "replica_a_tool", 1, replica("replica-a"))
    expect(rows(page, "replica_a_tool")).to_have_count(4, timeout=LIVE_BOUND_MS)
    rows(page, "replica_b_tool").first.click()
    expect(page.locator("#entry-fields")).to_contain_text("replica-b")
    page.reload()  # the per-tool table refreshes on a timer; a reload shows it now
    expect(page.locator('#tools tr[data-tool="replica_b_tool"] td').nth(1)).to_have_text("2")
    password = urlsplit(pg_url).password
    if password:
        assert password not in page.locator("body").inner_text()
    assert_stayed_local(opened, server.base)
