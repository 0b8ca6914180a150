"""Polygon's whole-market and one-day calls through the official `massive` client: grouped daily
bars, the previous close, a day's open and close (with pre-market and after-hours prices when the
market's day is New York's) and snapshots (day, previous day, latest minute, last trade, change,
gainers and losers) equal the same figures computed here in Python from the trades sent, under the
published sale-condition rules, cancels left out; trades still pending count at once."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from massive import RESTClient
from massive.exceptions import BadResponse

from core.db import Connection, set_market_timezone
from core.intervals import market_date
from mdp.processes import api_server
from pipelines.ingestion import drain_inbox
from tests.conftest import SYMBOLS, api_env
from tests.support import send, tick
from tests.test_conditions import Bar, rule_bar, rules

NEW_YORK = ZoneInfo("America/New_York")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
MANY = [f"M{n:03}" for n in range(60)]  # symbols registered for the whole-market calls


@dataclass(frozen=True)
class Sent:
    """A trade as sent, in acceptance order (`seq`)."""

    seq: int
    symbol: str
    ts: datetime
    price: float
    volume: float
    event_id: str
    conditions: list[int] | None = None
    cancelled: bool = False

    def tick(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"symbol": self.symbol, "ts": self.ts.isoformat(),
                                  "price": self.price, "volume": self.volume,
                                  "event_id": self.event_id}  # fmt: skip
        if self.conditions:
            fields["conditions"] = self.conditions
        return tick(**fields)

    def counts(self) -> bool:
        return not self.cancelled and any(rules(self.conditions))


def bar(trades: list[Sent]) -> Bar | None:
    """The bar of these trades under the published rules (`rule_bar`); none when no trade may
    update anything."""
    members = sorted((t for t in trades if t.counts()), key=lambda t: (t.ts, t.seq))
    if not members:
        return None
    return rule_bar([(t.price, t.volume, rules(t.conditions)) for t in members])


def first_versions(sent: list[Sent]) -> list[Sent]:
    """The first accepted version of each identity: a resend is no trade."""
    first: dict[str, Sent] = {}
    for t in sent:
        first.setdefault(t.event_id, t)
    return list(first.values())


def by_day(sent: list[Sent], zone: tzinfo = UTC) -> dict[tuple[str, date], list[Sent]]:
    days: dict[tuple[str, date], list[Sent]] = defaultdict(list)
    for t in first_versions(sent):
        days[(t.symbol, market_date(t.ts, zone))].append(t)
    return days


def same_bar(got: Any, want: Bar | None) -> bool:
    """A client's bar (`Agg`, `GroupedDailyAgg`, …) against an expected one."""
    if want is None:
        return got is None
    prices = (got.open, got.high, got.low, got.close)
    return (
        prices == want[:4]
        and math.isclose(got.volume, want[4], rel_tol=1e-12)
        and (got.vwap == want[5] or math.isclose(got.vwap, want[5] or 0, rel_tol=1e-9))
    )


def seed(db: Connection, trades: list[Sent], *, promote: bool = True) -> None:
    """Trades accepted, written straight to the inbox (with the rules their conditions give),
    then promoted (drained) unless said otherwise."""
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO trade_inbox (symbol, ts, price, volume, source, event_id, conditions,"
            " updates_high_low, updates_open_close, updates_volume)"
            " VALUES (%s, %s, %s, %s, 'XNAS', %s, %s, %s, %s, %s)",
            [(t.symbol, t.ts, t.price, t.volume, t.event_id, t.conditions, *rules(t.conditions))
             for t in trades],
        )  # fmt: skip
    if promote:
        drain_inbox(db)


def cancel(client: httpx.Client, trades: list[Sent]) -> None:
    asked = [{"source": "XNAS", "event_id": t.event_id} for t in trades]
    answer = client.post("/ingest/cancels", json={"trades": asked})
    assert answer.status_code == 200, answer.text


def ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


@pytest.fixture
def massive(api_url: str) -> RESTClient:
    return RESTClient(api_key="any-key", base=api_url, retries=0)


@pytest.fixture
def many_symbols(db: Connection) -> None:
    db.execute("INSERT INTO symbols (symbol) SELECT unnest(%s::text[])", [MANY])


@dataclass
class Market:
    """Days of trades of every symbol: promoted, then more still pending; `today` as it was
    when they were sent."""

    today: date
    sent: list[Sent]


def market_days(today: date, now: datetime) -> tuple[list[Sent], list[Sent], list[Sent]]:
    """Promoted trades, trades left pending and the trades to cancel, over four days up to now.

    Every symbol trades three days ago; most of them yesterday (AMZN and M000 do not: their
    previous day is older); today each `M` symbol closes at its own distance from yesterday's
    close (up and down, with volumes either side of the movers' 10,000 shares). AAPL carries the
    awkward cases: conditions (an odd lot far from the market, an average-price print, a trade
    that updates nothing), a resend of a promoted trade at another price, cancels of a promoted
    and a pending trade, a late trade of yesterday still pending; GOOGL's only trade before today
    is still pending; MSFT trades only while pending today."""
    seq = iter(range(1_000_000))
    midnight = datetime.combine(today, time(), UTC)
    elapsed = now - midnight

    def at(days_ago: int, fraction: float) -> datetime:
        if days_ago == 0:  # today, up to now
            return midnight + elapsed * fraction
        return midnight - timedelta(days=days_ago) + timedelta(days=1) * fraction

    def trade(symbol: str, ts: datetime, price: float, volume: float = 100, **kw: Any) -> Sent:
        n = next(seq)
        return Sent(n, symbol, ts, price, volume, kw.pop("event_id", f"t-{n}"), **kw)

    promoted: list[Sent] = []
    pending: list[Sent] = []
    for k, symbol in enumerate([*MANY, "AAPL", "TSLA", "AMZN"]):
        promoted += [trade(symbol, at(3, 0.2 + j / 10), 50.0 + j + k % 7) for j in range(3)]
        if symbol not in ("AMZN", "M000"):
            promoted += [trade(symbol, at(1, 0.1 * (j + 1)), 40.0 + k % 11 + j, 300 + j)
                         for j in range(4)]  # fmt: skip
    for k, symbol in enumerate(MANY):
        close = 40.0 + k % 11 + 3  # yesterday's close
        change = (k - 30) * 0.004 * close  # -12 % to +11.6 %, one of them 0
        volume = 2_600 if k % 9 == 4 else 6_000  # a few stay under 10,000 shares in all
        promoted += [trade(symbol, at(0, 0.1), close + change / 2, volume),
                     trade(symbol, at(0, 0.3), close + change, volume)]  # fmt: skip
        pending.append(trade(symbol, at(0, 0.6), close + change, volume))
    aapl = [
        trade("AAPL", at(0, 0.2), 100.0, 50),
        trade("AAPL", at(0, 0.25), 180.0, 7, conditions=[37]),  # odd lot: volume only
        trade("AAPL", at(0, 0.3), 101.5, 200, conditions=[2]),  # average price: volume only
        trade("AAPL", at(0, 0.35), 99.0, 10),
        trade("AAPL", at(0, 0.4), 98.0, 10),  # cancelled below
    ]
    promoted += aapl
    pending += [
        trade("AAPL", at(0, 0.45), 97.0, 30),
        trade("AAPL", at(0, 0.5), 103.0, 40),  # cancelled below
        trade("AAPL", at(0, 0.55), 150.0, 1, conditions=[15]),  # counts nowhere, yet the last
        trade("AAPL", at(0, 0.2), 555.0, 50, event_id=aapl[0].event_id),  # a resend
        trade("AAPL", at(1, 0.95), 44.0, 25),  # late: yesterday's new close
        trade("GOOGL", at(2, 0.5), 70.0, 10),
        trade("GOOGL", at(0, 0.5), 77.0, 20),
        trade("MSFT", at(0, 0.7), 30.0, 12),
        trade("MSFT", at(0, 0.7), 31.0, 12),  # the same time: the later accepted is the close
    ]
    pending.append(replace(pending[-1], seq=next(seq), ts=at(0, 0.8), price=999.0))  # a resend
    return promoted, pending, [aapl[4], pending[-8]]


@pytest.fixture
def market(client: httpx.Client, db: Connection, many_symbols: None) -> Market:
    now = datetime.now(UTC)
    today = market_date(now, UTC)
    if datetime.combine(today + timedelta(days=1), time(), UTC) - now < timedelta(minutes=2):
        pytest.skip("the market's day ends in less than the two minutes a test may take")
    promoted, pending, cancelled = market_days(today, now)
    seed(db, promoted)
    # Pending: the new symbols' written straight to the inbox (the API's registry of symbols
    # may not know them yet), the others acknowledged by the API.
    seed(db, [t for t in pending if t.symbol in MANY], promote=False)
    send(client, [t.tick() for t in pending if t.symbol not in MANY])
    cancel(client, cancelled)
    marked = {t.event_id for t in cancelled}
    accepted = promoted + sorted(pending, key=lambda t: t.symbol not in MANY)
    sent = [replace(t, seq=n, cancelled=t.event_id in marked) for n, t in enumerate(accepted)]
    return Market(today, sent)


def test_grouped_daily_is_every_symbols_day_bar(massive: RESTClient, market: Market) -> None:
    days = by_day(market.sent)
    for day in (market.today - timedelta(days=n) for n in range(5)):
        expected = {symbol: b for (symbol, d), ts in days.items() if d == day if (b := bar(ts))}
        got = massive.get_grouped_daily_aggs(day.isoformat())
        assert [g.ticker for g in got] == sorted(expected), day
        assert all(same_bar(g, expected[g.ticker]) for g in got), day
        midnight = ms(datetime.combine(day, time(), UTC))
        assert all(g.timestamp == midnight for g in got)
        assert [g.transactions for g in got] == [expected[g.ticker][6] for g in got]
    assert massive.get_grouped_daily_aggs("2001-01-01") == []


def test_the_previous_close_is_the_last_day_before_today_with_a_bar(
    massive: RESTClient, market: Market
) -> None:
    days = by_day(market.sent)
    for symbol in SYMBOLS + MANY[:3]:
        before = sorted(d for (s, d), ts in days.items() if s == symbol and d < market.today
                        and bar(ts))  # fmt: skip
        got = massive.get_previous_close_agg(symbol)
        if not before:
            assert got == [], symbol
            continue
        [previous] = got
        assert previous.ticker == symbol
        assert previous.timestamp == ms(datetime.combine(before[-1], time(), UTC)), symbol
        assert same_bar(previous, bar(days[(symbol, before[-1])])), symbol
    assert massive.get_previous_close_agg("NOPE") == []


def test_the_daily_open_close_of_a_utc_market_has_no_extended_hours(
    massive: RESTClient, market: Market
) -> None:
    days = by_day(market.sent)
    for (symbol, day), trades in days.items():
        if symbol in ("AAPL", "GOOGL", "M001"):
            got = massive.get_daily_open_close_agg(symbol, day.isoformat())
            want = bar(trades)
            assert want is not None
            assert (got.symbol, got.from_, got.status) == (symbol, day.isoformat(), "OK")
            assert (got.open, got.high, got.low, got.close) == want[:4]
            assert math.isclose(got.volume, want[4], rel_tol=1e-12)
            assert (got.pre_market, got.after_hours) == (None, None)
    for symbol, missing in (("AAPL", "2001-01-01"), ("NOPE", market.today.isoformat())):
        with pytest.raises(BadResponse, match="NOT_FOUND"):
            massive.get_daily_open_close_agg(symbol, missing)


def last_trade(sent: list[Sent], symbol: str) -> Sent | None:
    mine = [t for t in first_versions(sent) if t.symbol == symbol and not t.cancelled]
    return max(mine, key=lambda t: (t.ts, t.seq), default=None)


def expected_snapshot(market: Market, symbol: str) -> dict[str, Any]:
    days = by_day(market.sent)
    today = bar(days.get((symbol, market.today), []))
    before = sorted(d for (s, d), ts in days.items() if s == symbol and d < market.today
                    and bar(ts))  # fmt: skip
    previous = bar(days[(symbol, before[-1])]) if before else None
    minutes: dict[datetime, list[Sent]] = defaultdict(list)
    for t in days.get((symbol, market.today), []):
        if t.counts():
            minutes[t.ts.replace(second=0, microsecond=0)].append(t)
    change = percent = None
    if today and previous and today[3] is not None and previous[3]:
        change = today[3] - previous[3]
        percent = 100 * change / previous[3]
    return {
        "day": today,
        "prev": previous,
        "min": (max(minutes), bar(minutes[max(minutes)])) if minutes else None,
        "last": last_trade(market.sent, symbol),
        "change": change,
        "percent": percent,
    }


def same_snapshot(got: Any, want: dict[str, Any]) -> bool:
    last: Sent | None = want["last"]
    minute = want["min"]
    checks = [
        same_bar(got.day, want["day"]),
        same_bar(got.prev_day, want["prev"]),
        got.min is None if minute is None else (
            same_bar(got.min, minute[1]) and got.min.timestamp == ms(minute[0])
            and got.min.transactions == minute[1][6]
            and math.isclose(got.min.accumulated_volume, want["day"][4], rel_tol=1e-12)
        ),
        got.last_trade is None if last is None else (
            (got.last_trade.id, got.last_trade.price, got.last_trade.size)
            == (last.event_id, last.price, last.volume)
            and got.last_trade.conditions == last.conditions
            and got.last_trade.sip_timestamp == (last.ts - EPOCH) // MICROSECOND * 1000
            and got.updated == got.last_trade.sip_timestamp
        ),
        got.todays_change is None if want["change"] is None
        else math.isclose(got.todays_change, want["change"], abs_tol=1e-9),
        got.todays_change_percent is None if want["percent"] is None
        else math.isclose(got.todays_change_percent, want["percent"], abs_tol=1e-9),
        got.last_quote is None,
    ]  # fmt: skip
    return all(checks)


def test_snapshots_hold_the_day_the_previous_day_the_minute_and_the_last_trade(
    massive: RESTClient, market: Market
) -> None:
    every = massive.get_snapshot_all("stocks")
    traded = sorted({t.symbol for t in market.sent})
    assert [s.ticker for s in every] == traded
    for snapshot in every:
        assert same_snapshot(snapshot, expected_snapshot(market, snapshot.ticker)), snapshot

    some = massive.get_snapshot_all("stocks", tickers=["MSFT", "AAPL", "NOPE", "M007"])
    assert [s.ticker for s in some] == ["AAPL", "M007", "MSFT"]
    for ticker in ("AAPL", "GOOGL", "MSFT", "AMZN", "M000"):
        one = massive.get_snapshot_ticker("stocks", ticker)
        assert one.ticker == ticker
        assert same_snapshot(one, expected_snapshot(market, ticker)), one
    for unknown in ("NOPE", MANY[0].replace("M", "Q")):
        with pytest.raises(BadResponse, match="NOT_FOUND"):
            massive.get_snapshot_ticker("stocks", unknown)


@pytest.mark.parametrize("direction", ["gainers", "losers"])
def test_gainers_and_losers_are_the_top_twenty_movers_with_volume(
    massive: RESTClient, market: Market, direction: str
) -> None:
    sign = 1 if direction == "gainers" else -1
    movers = []
    for symbol in sorted({t.symbol for t in market.sent}):
        want = expected_snapshot(market, symbol)
        if want["percent"] and want["percent"] * sign > 0 and want["day"][4] >= 10_000:
            movers.append((-sign * want["percent"], symbol))
    assert len(movers) > 20  # the list is cut
    assert any(want_volume < 10_000 for want_volume in (
        expected_snapshot(market, s)["day"][4] for s in MANY))  # fmt: skip
    got = massive.get_snapshot_direction("stocks", direction)
    assert [s.ticker for s in got] == [symbol for _, symbol in sorted(movers)[:20]]
    assert all(same_snapshot(s, expected_snapshot(market, s.ticker)) for s in got)


def test_an_acknowledged_trade_shows_at_once(
    massive: RESTClient, client: httpx.Client, market: Market
) -> None:
    now = datetime.now(UTC)
    late = Sent(10**6, "AMZN", now - timedelta(seconds=1), 123.0, 40_000, "live-1")
    send(client, [late.tick()])
    market.sent.append(late)
    snapshot = massive.get_snapshot_ticker("stocks", "AMZN")
    assert same_snapshot(snapshot, expected_snapshot(market, "AMZN"))
    [today] = [g for g in massive.get_grouped_daily_aggs(market.today.isoformat())
               if g.ticker == "AMZN"]  # fmt: skip
    assert same_bar(today, bar(by_day(market.sent)[("AMZN", market.today)]))


def test_refusals_come_in_polygons_error_shape(api_url: str) -> None:
    for path in ("/v2/aggs/grouped/locale/us/market/stocks/yesterday",
                 "/v1/open-close/AAPL/2026-13-01",
                 "/v2/snapshot/locale/us/markets/stocks/sideways"):  # fmt: skip
        answer = httpx.get(f"{api_url}{path}")
        assert answer.status_code == 400, path
        body = answer.json()
        assert body["status"] == "ERROR" and body["error"] and body["request_id"], body


def test_read_keys_guard_every_call(database_url: str, db: Connection) -> None:
    with api_server(api_env(database_url) | {"READ_API_KEYS": "k1,k2"}) as url:
        refused = RESTClient(api_key="wrong", base=url, retries=0)
        with pytest.raises(BadResponse, match='"status":"ERROR"'):
            refused.get_grouped_daily_aggs("2026-11-20")
        with pytest.raises(BadResponse, match="read API key"):
            refused.get_snapshot_all("stocks")
        answer = httpx.get(f"{url}/v2/snapshot/locale/us/markets/stocks/gainers")
        assert answer.status_code == 401
        assert answer.json()["status"] == "ERROR"
        allowed = RESTClient(api_key="k2", base=url, retries=0)
        assert allowed.get_grouped_daily_aggs("2026-11-20") == []
        assert allowed.get_snapshot_direction("stocks", "losers") == []


# The market's day in New York: these tests run last, the database's zone is New York's while
# they do (module fixture) and UTC again after.


@pytest.fixture(scope="module")
def new_york_url(database_url: str) -> Iterator[str]:
    try:
        set_market_timezone(database_url, "America/New_York")
        with api_server(api_env(database_url) | {"MARKET_TIMEZONE": "America/New_York"}) as url:
            yield url
    finally:
        set_market_timezone(database_url, "UTC")


def test_open_close_in_new_york_gives_the_pre_market_and_after_hours_prices(
    new_york_url: str, db: Connection
) -> None:
    """2026-11-20, a Friday in New York winter time (UTC-5): pre-market is before 09:30, after
    hours 16:00 to 20:00; the day runs midnight to midnight New York time."""
    day = date(2026, 11, 20)
    clocks = [
        ("00:30", 9.0, None), ("08:15", 10.0, None), ("08:20", 55.0, [37]),  # odd lot: counts
        ("09:00", 70.0, [15]),  # counts nowhere: not the pre-market price
        ("09:30", 11.0, None), ("12:00", 12.5, None), ("15:59:59", 12.0, None),
        ("16:00", 12.25, None), ("19:59:59", 12.75, None), ("20:00", 13.0, None),
        ("23:59", 13.5, None),
    ]  # fmt: skip
    sent = [
        Sent(n, "AAPL", datetime.combine(day, time.fromisoformat(clock), NEW_YORK)
             .astimezone(UTC), price, 10, f"ny-{n}", conditions)
        for n, (clock, price, conditions) in enumerate(clocks)
    ]  # fmt: skip
    sent.append(Sent(98, "AAPL", datetime(2026, 11, 21, 4, 59, 30, tzinfo=UTC), 99.0, 1, "ny-98"))
    sent = [replace(t, seq=n) for n, t in enumerate(sent[:8] + sent[-1:] + sent[8:-1])]
    seed(db, sent[:9])
    with httpx.Client(base_url=new_york_url, auth=("tester", "s3cret-test-password")) as client:
        send(client, [t.tick() for t in sent[9:]])  # the evening, still pending
    massive = RESTClient(api_key="any-key", base=new_york_url, retries=0)

    got = massive.get_daily_open_close_agg("AAPL", "2026-11-20")
    want = bar(by_day(sent, NEW_YORK)[("AAPL", day)])
    assert want is not None
    assert (got.open, got.high, got.low, got.close) == want[:4]
    assert (got.open, got.close) == (9.0, 99.0)  # 04:59 UTC on the 21st is still the 20th
    assert math.isclose(got.volume, want[4], rel_tol=1e-12)
    assert (got.pre_market, got.after_hours) == (55.0, 12.75)

    [grouped] = massive.get_grouped_daily_aggs("2026-11-20")
    assert grouped.timestamp == ms(datetime(2026, 11, 20, 5, tzinfo=UTC))
    assert same_bar(grouped, want)
