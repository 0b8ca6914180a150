"""Polygon/Massive's reference calls through the official `massive` client: the registered
symbols as tickers (`list_tickers` paged through next_url, `get_ticker_details`), the market's
session now from the configurable trading calendar (`get_market_status`), and refusals in
Polygon's error shape (READ_API_KEYS on all of them: `tests/test_read_keys.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from massive import RESTClient
from massive.exceptions import BadResponse

from core.db import Connection
from tests.conftest import SYMBOLS

EXTRA = ["A", "BRK.A", "BRK-B", "ZZ9", "BRKX"]
FIRST, LAST = datetime(2026, 11, 2, 14, 30, tzinfo=UTC), datetime(2026, 11, 20, 20, 59, tzinfo=UTC)


@pytest.fixture
def massive(api_url: str) -> RESTClient:
    return RESTClient(api_key="any-key", base=api_url, retries=0)


@pytest.fixture
def registered(db: Connection) -> list[str]:
    """The default symbols and a few more, AAPL with a first and a last trade; every symbol in
    byte order."""
    db.execute("INSERT INTO symbols (symbol) SELECT unnest(%s::text[])", [EXTRA])
    db.execute(
        "UPDATE symbols SET first_trade_at = %s, last_trade_at = %s WHERE symbol = 'AAPL'",
        [FIRST, LAST],
    )
    return sorted([*SYMBOLS, *EXTRA])


def test_every_symbol_is_listed_as_a_ticker_through_next_url(
    massive: RESTClient, registered: list[str]
) -> None:
    tickers = list(massive.list_tickers(limit=2))
    assert [t.ticker for t in tickers] == registered
    assert {(t.market, t.locale, t.active) for t in tickers} == {("stocks", "us", True)}
    assert all(t.name is None and t.type is None for t in tickers)  # never invented
    newest_first = list(massive.list_tickers(order="desc", limit=3))
    assert [t.ticker for t in newest_first] == list(reversed(registered))


@pytest.mark.parametrize(
    ("filters", "keeps"),
    [
        ({"ticker": "MSFT"}, lambda s: s == "MSFT"),
        ({"ticker_gte": "BRK", "ticker_lt": "MSFT"}, lambda s: "BRK" <= s < "MSFT"),
        ({"ticker_gt": "BRK-B", "ticker_lte": "BRKX"}, lambda s: "BRK-B" < s <= "BRKX"),
        ({"search": "brk"}, lambda s: "BRK" in s),
        ({"market": "stocks"}, lambda s: True),
        ({"market": "crypto"}, lambda s: False),
        ({"active": False}, lambda s: False),
        ({"type": "CS"}, lambda s: False),
        ({"date": "2026-11-20"}, lambda s: True),
    ],
)
def test_ticker_filters(
    massive: RESTClient, registered: list[str], filters: dict[str, Any], keeps: Any
) -> None:
    tickers = massive.list_tickers(limit=2, **filters)
    assert [t.ticker for t in tickers] == [s for s in registered if keeps(s)]


def test_ticker_details_tell_first_and_last_trade(
    api_url: str, massive: RESTClient, registered: list[str]
) -> None:
    details = massive.get_ticker_details("AAPL")
    assert (details.ticker, details.market, details.locale, details.active) == (
        "AAPL", "stocks", "us", True,
    )  # fmt: skip
    body = httpx.get(f"{api_url}/v3/reference/tickers/AAPL").json()
    assert body["results"]["first_trade_utc"] == FIRST.isoformat().replace("+00:00", "Z")
    assert body["results"]["last_trade_utc"] == LAST.isoformat().replace("+00:00", "Z")
    assert (
        "first_trade_utc"
        not in httpx.get(f"{api_url}/v3/reference/tickers/BRK.A").json()["results"]
    )

    with pytest.raises(BadResponse):
        massive.get_ticker_details("NOPE")
    missing = httpx.get(f"{api_url}/v3/reference/tickers/NOPE")
    assert missing.status_code == 404
    assert missing.json()["status"] == "NOT_FOUND" and missing.json()["message"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v3/reference/tickers", {"limit": 1001}),
        ("/v3/reference/tickers", {"sort": "name"}),
        ("/v3/reference/tickers", {"active": "maybe"}),
        ("/v3/reference/tickers", {"ticker.gt": "\x00"}),
        ("/v3/reference/tickers", {"search": "A\x00"}),
        ("/v3/reference/conditions", {"limit": 0}),
    ],
)
def test_bad_parameters_are_refused_in_polygons_error_shape(
    api_url: str, path: str, params: dict[str, Any]
) -> None:
    answer = httpx.get(f"{api_url}{path}", params=params)
    assert answer.status_code == 400
    assert answer.json()["status"] == "ERROR" and answer.json()["error"]


# The market's session, computed here from the calendar rows independently of the product.
def expected_market(server_time: str, db: Connection) -> tuple[str, bool, bool]:
    """(market, earlyHours, afterHours) at `server_time` in the zone of its own offset."""
    local = datetime.fromisoformat(server_time)
    [hours] = db.execute(
        "SELECT early_open, regular_open, regular_close, late_close FROM market_hours"
    ).fetchall()
    early_open, regular_open, regular_close, late_close = hours
    special = db.execute(
        "SELECT close_at, late_close_at FROM market_holidays WHERE day = %s", [local.date()]
    ).fetchall()
    if special:
        closes, late_closes = special[0]
        if closes is None:
            return "closed", False, False
        regular_close, late_close = closes, late_closes or late_close
    clock = local.time().replace(tzinfo=None)
    if local.isoweekday() in (6, 7) or not early_open <= clock < late_close:
        return "closed", False, False
    if clock < regular_open:
        return "extended-hours", True, False
    if clock < regular_close:
        return "open", False, False
    return "extended-hours", False, True


@pytest.fixture
def calendar(db: Connection) -> Iterator[Connection]:
    """The trading calendar, given back as the migration made it."""
    hours = db.execute("SELECT * FROM market_hours").fetchall()
    holidays = db.execute("SELECT * FROM market_holidays").fetchall()
    yield db
    db.execute("DELETE FROM market_hours")
    db.execute("INSERT INTO market_hours VALUES (%s, %s, %s, %s, %s)", hours[0])
    db.execute("DELETE FROM market_holidays")
    db.cursor().executemany("INSERT INTO market_holidays VALUES (%s, %s, %s, %s)", holidays)


def status_now(massive: RESTClient, api_url: str) -> tuple[Any, dict[str, Any]]:
    return massive.get_market_status(), httpx.get(f"{api_url}/v1/marketstatus/now").json()


def test_market_status_follows_the_calendar(
    massive: RESTClient, api_url: str, calendar: Connection
) -> None:
    status, body = status_now(massive, api_url)
    assert datetime.fromisoformat(status.server_time).utcoffset() == timedelta(0)  # MARKET_TIMEZONE
    wanted = expected_market(status.server_time, calendar)
    assert (status.market, status.early_hours, status.after_hours) == wanted
    assert (status.exchanges.nyse, status.exchanges.nasdaq) == (status.market, status.market)
    assert status.currencies.crypto == "open" and "fx" not in body["currencies"]

    # An operator's edits count at once: a session all day long, then today a holiday.
    calendar.execute(
        "UPDATE market_hours SET early_open = '00:00', regular_open = '00:00',"
        " regular_close = '23:59:59.999999', late_close = '23:59:59.999999'"
    )
    status, _ = status_now(massive, api_url)
    assert (status.market, status.early_hours, status.after_hours) == expected_market(
        status.server_time, calendar
    )
    weekday = datetime.fromisoformat(status.server_time).isoweekday() < 6
    assert status.market == ("open" if weekday else "closed")

    today = datetime.fromisoformat(status.server_time).date()
    days = [today - timedelta(days=1), today, today + timedelta(days=1)]  # whichever it is then
    for day in days:
        calendar.execute(
            "INSERT INTO market_holidays (day, name) VALUES (%s, 'Test holiday')"
            " ON CONFLICT (day) DO UPDATE SET close_at = NULL, late_close_at = NULL",
            [day],
        )
    status, _ = status_now(massive, api_url)
    assert (status.market, status.early_hours, status.after_hours) == ("closed", False, False)


def test_the_nyse_calendar_of_2026_and_2027_is_loaded(db: Connection) -> None:
    rows = db.execute("SELECT day, close_at, late_close_at FROM market_holidays").fetchall()
    closed = [day for day, close_at, _ in rows if close_at is None]
    early = {day: (close_at, late) for day, close_at, late in rows if close_at is not None}
    assert all(day.isoweekday() < 6 for day, _, _ in rows)
    assert [sum(d.year == y for d in closed) for y in (2026, 2027)] == [10, 10]
    assert date(2026, 4, 3) in closed and date(2027, 3, 26) in closed  # Good Fridays
    assert date(2027, 12, 24) in closed  # Christmas on a Saturday: the Friday before
    assert early == {
        date(2026, 11, 27): (time(13), time(17)),
        date(2026, 12, 24): (time(13), time(17)),
        date(2027, 11, 26): (time(13), time(17)),
    }
