"""The operator dashboard in a real browser (Playwright driving Debian's Chromium): it loads with no
console error, charts ingested candles, shows a new trade live and turns red when ingestion stops.
A screenshot of each run is kept in artifacts/ to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from core.db import Connection
from mdp.processes import api_server
from pipelines.ingestion import drain_inbox, record_idle_cycle
from tests.conftest import api_env
from tests.support import send, tick

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")  # Playwright's loop must be gone before other tests' asyncio.run
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is needed for the browser tests (./run test installs it with apt)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def test_the_dashboard_charts_candles_and_follows_trades_live(
    page: Page, api_url: str, client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(i, ts=now_iso(), price=100.0 + i) for i in range(5)])
    drain_inbox(db)
    record_idle_cycle(db)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(f"{api_url}/dashboard?symbol=AAPL&interval=1m")
    page.wait_for_function("window.dashboard && window.dashboard.bars().length === 1")
    expect(page.locator("#status")).to_have_attribute("data-status", "alive")
    expect(page.locator("#count-trades")).to_have_text("5")
    expect(page.locator("#activity")).to_have_text("")  # trading: not idle
    expect(page.locator("#latency tr")).not_to_have_count(0)
    assert page.locator("#dagster-link").get_attribute("href", timeout=1000)

    expect(page.locator("#promoted-rate")).to_have_text("0.1 /s")  # 5 in the last minute
    expect(page.locator("#duplicate-rate")).not_to_have_class("warning")

    send(client, [tick(99, ts=now_iso(), price=123.45)])  # accepted, not yet materialized
    page.wait_for_function("window.dashboard.bars().at(-1).close === 123.45")
    expect(page.locator("#last-trade")).to_contain_text("123.45")
    expect(page.locator("#ohlc")).to_contain_text("C 123.45")  # the last bar, read out

    box = page.locator("#chart").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.3)
    expect(page.locator("#ohlc")).to_contain_text(" O ")  # the crosshair's bar, read out

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
    assert problems == []


def test_the_chart_keeps_the_time_between_bars(
    page: Page, api_url: str, client: httpx.Client, db: Connection
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    moments = [now - timedelta(minutes=30), now - timedelta(minutes=29), now]  # a 28-minute gap
    send(client, [tick(i, ts=m.isoformat(), price=100.0 + i) for i, m in enumerate(moments)])
    drain_inbox(db)
    page.goto(f"{api_url}/dashboard?symbol=AAPL&interval=1m")
    page.wait_for_function("window.dashboard && window.dashboard.bars().length === 3")
    times = page.evaluate("window.dashboard.bars().map((b) => b.time)")
    assert times == [int(m.timestamp()) for m in moments]
    # The gap is there on the time scale: 29 minutes apart is 29 times as far as 1 minute apart.
    x = page.evaluate("window.dashboard.bars().map((b) => window.dashboard.x(b.time))")
    assert (x[2] - x[1]) / (x[1] - x[0]) == pytest.approx(29, rel=0.02)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-gap.png")


def test_a_click_on_a_bar_lists_its_trades_and_what_each_counted_in(
    page: Page, api_url: str, client: httpx.Client, db: Connection
) -> None:
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    ticks = [
        tick(1, ts=(minute + timedelta(seconds=1)).isoformat(), price=100.0),
        tick(2, ts=(minute + timedelta(seconds=2)).isoformat(), price=150.0, conditions=[37]),
        tick(3, ts=(minute + timedelta(seconds=3)).isoformat(), price=101.0, conditions=[10]),
    ]
    send(client, ticks)
    drain_inbox(db)
    page.goto(f"{api_url}/dashboard?symbol=AAPL&interval=1m")
    page.wait_for_function("window.dashboard && window.dashboard.bars().length === 1")
    x = page.evaluate(f"window.dashboard.x({int(minute.timestamp())})")
    box = page.locator("#chart").bounding_box()
    assert box is not None and x is not None
    page.mouse.click(box["x"] + x, box["y"] + box["height"] * 0.4)
    rows = page.locator("#bar-trades-rows tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("open/close, high/low, volume")
    expect(rows.nth(1)).to_contain_text("150.00")
    expect(rows.nth(1).locator("td").nth(4)).to_have_text("volume")  # an odd lot
    expect(rows.nth(2).locator("td").nth(4)).to_have_text("high/low, volume")
    expect(page.locator("#bar-trades-title")).to_contain_text("AAPL 1m bar")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-bar-trades.png", full_page=True)


def test_the_status_turns_red_when_ingestion_stops(
    page: Page, api_url: str, db: Connection
) -> None:
    record_idle_cycle(db)
    page.goto(f"{api_url}/dashboard")
    expect(page.locator("#status")).to_have_attribute("data-status", "alive")
    expect(page.locator("#activity")).to_have_text("idle: no trades yet")  # quiet, not stuck

    db.execute("UPDATE ingest_batches SET finished_at = finished_at - interval '5 minutes'")
    badge = page.locator("#status")
    expect(badge).to_have_attribute("data-status", "stale")
    expect(page.locator("#activity")).to_have_text("")
    expect(badge).to_have_css("background-color", "rgb(74, 20, 23)")
    page.screenshot(path=ARTIFACTS / "dashboard-stale.png")


def test_a_feed_of_nothing_but_resends_is_flagged(
    page: Page, client: httpx.Client, api_url: str, db: Connection
) -> None:
    ticks = [tick(i, ts=now_iso()) for i in range(5)]
    send(client, ticks)
    drain_inbox(db)
    db.execute("UPDATE ingest_batches SET finished_at = finished_at - interval '2 minutes'")
    send(client, ticks)  # a restarted source replaying identities it already sent
    drain_inbox(db)
    page.goto(f"{api_url}/dashboard")
    expect(page.locator("#promoted-rate")).to_have_text("0.0 /s")
    expect(page.locator("#duplicate-rate")).to_have_class("warning")


def test_the_dashboard_reads_well_on_a_phone(
    browser: Browser, api_url: str, db: Connection
) -> None:
    record_idle_cycle(db)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    phone.goto(f"{api_url}/dashboard")
    expect(phone.locator("#status")).to_have_attribute("data-status", "alive")
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the page scrolls sideways on a phone"
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=ARTIFACTS / "dashboard-phone.png", full_page=True)
    context.close()


# ReDoc's side menu links its "powered by" logo from Redocly's CDN; offline it is just not shown.
REDOC_BADGE = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}


@pytest.mark.parametrize(
    ("path", "drawn", "decorative"),
    [("/docs", ".swagger-ui .info .title", set()), ("/redoc", "h1", REDOC_BADGE)],
)
def test_the_api_docs_work_without_internet(
    page: Page, api_url: str, path: str, drawn: str, decorative: set[str]
) -> None:
    elsewhere: list[str] = []

    def offline(route: Route) -> None:  # anything not from our server is refused, as offline
        if route.request.url.startswith(api_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.goto(f"{api_url}{path}")
    expect(page.locator(drawn).first).to_contain_text("Market Data Platform")
    assert set(elsewhere) <= decorative
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"api{path.replace('/', '-')}.png")


def test_the_dashboard_passes_its_read_key_on(
    page: Page, database_url: str, client: httpx.Client, db: Connection
) -> None:
    """With READ_API_KEYS set, /dashboard?apiKey=KEY reads and follows the stream with KEY."""
    send(client, [tick(i, ts=now_iso(), price=100.0 + i) for i in range(3)])
    drain_inbox(db)
    with api_server({**api_env(database_url), "READ_API_KEYS": "beta"}) as keyed:
        page.goto(f"{keyed}/dashboard?apiKey=beta&symbol=AAPL&interval=1m")
        page.wait_for_function("window.dashboard && window.dashboard.bars().length === 1")
        send(client, [tick(99, ts=now_iso(), price=123.45)])
        expect(page.locator("#last-trade")).to_contain_text("123.45")  # by /stream, with the key
