"""The Polygon/Massive-compatible endpoints, driven by the official `massive` Python client pointed
at our base URL: bars equal an independent computation over trades, pagination follows next_url."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from massive import RESTClient
from massive.exceptions import BadResponse

from core.db import Connection
from pipelines.ingestion import drain_inbox
from tests.candle_reference import reference
from tests.support import send, tick


@pytest.fixture
def massive(api_url: str) -> RESTClient:
    return RESTClient(api_key="any-key", base=api_url, retries=0)


@pytest.fixture
def two_days(client: httpx.Client, db: Connection) -> None:
    ticks = [
        tick(i, ts=f"2026-11-{19 + i % 2}T{(i * 7) % 24:02}:{(i * 13) % 60:02}:{i % 60:02}Z",
             price=100.0 + (i * 37) % 23, volume=1 + i % 9)
        for i in range(600)
    ]  # fmt: skip
    send(client, ticks)
    drain_inbox(db)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def as_tuples(bars: list[Any]) -> list[tuple[Any, ...]]:
    return [(b.timestamp, b.open, b.high, b.low, b.close, b.transactions) for b in bars]


@pytest.mark.usefixtures("two_days")
def test_minute_bars_through_the_official_client_follow_pagination(
    massive: RESTClient, db: Connection
) -> None:
    bars = list(massive.list_aggs("AAPL", 1, "minute", "2026-11-19", "2026-11-20", limit=97))
    expected = reference(db, "1m")
    assert as_tuples(bars) == [(ms(e[1]), *e[2:6], e[8]) for e in expected]
    assert [b.volume for b in bars] == pytest.approx([e[6] for e in expected])
    assert [b.vwap for b in bars] == pytest.approx([e[7] for e in expected])

    newest_first = list(
        massive.list_aggs("AAPL", 1, "minute", "2026-11-19", "2026-11-20", sort="desc", limit=50)
    )
    assert as_tuples(newest_first) == list(reversed(as_tuples(bars)))


@pytest.mark.usefixtures("two_days")
@pytest.mark.parametrize(
    ("multiplier", "timespan", "interval"), [(5, "minute", "5m"), (1, "day", "1d")]
)
def test_bars_of_a_stored_interval(
    massive: RESTClient, db: Connection, multiplier: int, timespan: str, interval: str
) -> None:
    bars = massive.get_aggs("AAPL", multiplier, timespan, "2026-11-19", "2026-11-20")
    assert as_tuples(bars) == [(ms(e[1]), *e[2:6], e[8]) for e in reference(db, interval)]


def rolled_up(db: Connection, width: timedelta) -> list[tuple[Any, ...]]:
    """Bars of `width` aligned from each UTC day's start, straight from the trades."""
    trades = db.execute(
        "SELECT ts, price, volume FROM trades WHERE symbol = 'AAPL' ORDER BY ts, seq"
    ).fetchall()
    bars: dict[datetime, list[Any]] = defaultdict(list)
    for ts, price, _ in trades:
        day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        bars[day + (ts - day) // width * width].append(price)
    return [(ms(t), p[0], max(p), min(p), p[-1], len(p)) for t, p in sorted(bars.items())]


@pytest.mark.usefixtures("two_days")
@pytest.mark.parametrize(
    ("multiplier", "timespan", "width"),
    [(7, "minute", timedelta(minutes=7)), (2, "hour", timedelta(hours=2)),
     (5, "hour", timedelta(hours=5))],
)  # fmt: skip
def test_other_multipliers_are_rolled_up_and_aligned_from_the_day_start(
    massive: RESTClient, db: Connection, multiplier: int, timespan: str, width: timedelta
) -> None:
    bars = massive.get_aggs("AAPL", multiplier, timespan, "2026-11-19", "2026-11-20")
    assert as_tuples(bars) == rolled_up(db, width)


def season_ticks() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Four months of trades (a few a day, one busy day, three hours with a trade every minute),
    then ticks left pending: new trades, one of last year, and resends of promoted and of pending
    trades (their other prices must not count)."""
    promoted: list[dict[str, Any]] = []
    for d in range(123):
        day = date(2026, 7, 1) + timedelta(days=d)
        for j in range(1 + d % 3):
            clock = f"{(d * 5 + j * 7) % 24:02}:{(d * 11 + j * 13) % 60:02}:{j:02}"
            promoted.append(tick(len(promoted), ts=f"{day}T{clock}Z",
                                 price=100.0 + (d * 37 + j) % 23, volume=1 + d % 9))  # fmt: skip
    for i in range(360):
        clock = f"{(i * 7) % 24:02}:{(i * 13) % 60:02}:{i % 60:02}"
        promoted.append(tick(len(promoted), ts=f"2026-09-17T{clock}Z",
                             price=90.0 + (i * 31) % 29, volume=1 + i % 7))  # fmt: skip
    for m in range(180):  # a trade every minute: full bars, whichever the width
        moment = datetime(2026, 10, 5, 10, tzinfo=UTC) + timedelta(minutes=m, seconds=17)
        promoted.append(tick(len(promoted), ts=moment.isoformat(), price=60.0 + m % 11))
    pending = [
        tick(len(promoted) + i, price=80.0 + i % 17, volume=2,
             ts=f"2026-{7 + i % 4:02}-{1 + i % 28:02}T{(i * 5) % 24:02}:{i % 60:02}:30Z")
        for i in range(60)
    ]  # fmt: skip
    pending.append(tick(len(promoted) + 60, ts="2025-12-31T23:59:59Z", price=70.0))  # last year
    pending += [{**t, "price": 999.0} for t in promoted[::40] + pending[::15]]
    return promoted, pending


@pytest.fixture
def season(client: httpx.Client, db: Connection) -> list[dict[str, Any]]:
    """The season's ticks, in acceptance order; the last ones still pending."""
    promoted, pending = season_ticks()
    send(client, promoted)
    drain_inbox(db)
    send(client, pending)
    return promoted + pending


def bars_of(
    ticks: list[dict[str, Any]],
    bar_start: Callable[[datetime], datetime],
    start: datetime,
    end: datetime,
) -> list[tuple[Any, ...]]:
    """Bars straight from the ticks, in Python: the first accepted version of each trade, bars
    starting in [start, end), open and close by time then acceptance order."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for t in ticks:
        first.setdefault((t["source"], t["event_id"]), t)
    bars: dict[datetime, list[tuple[datetime, float, float]]] = defaultdict(list)
    for t in first.values():
        ts = datetime.fromisoformat(t["ts"])
        if start <= ts < end:
            bars[bar_start(ts)].append((ts, t["price"], t["volume"]))
    result = []
    for moment, trades in sorted(bars.items()):
        if moment < start:
            continue
        trades.sort(key=lambda trade: trade[0])  # stable: equal times keep acceptance order
        prices = [p for _, p, _ in trades]
        volume = sum(v for _, _, v in trades)
        vwap = sum(p * v for _, p, v in trades) / volume
        result.append((ms(moment), prices[0], max(prices), min(prices), prices[-1], len(trades),
                       volume, vwap))  # fmt: skip
    return result


def day_aligned(width: timedelta) -> Callable[[datetime], datetime]:
    def bar_start(ts: datetime) -> datetime:
        day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        return day + (ts - day) // width * width

    return bar_start


def from_origin(width: timedelta, origin: datetime) -> Callable[[datetime], datetime]:
    return lambda ts: origin + (ts - origin) // width * width


def calendar(months: int) -> Callable[[datetime], datetime]:
    def bar_start(ts: datetime) -> datetime:
        index = (ts.year * 12 + ts.month - 1) // months * months
        return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)

    return bar_start


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MONDAY = datetime(1970, 1, 5, tzinfo=UTC)
SEASON_START, SEASON_END = datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
BUSY_DAY = datetime(2026, 9, 17, tzinfo=UTC)
PAGED = [
    (1, "minute", BUSY_DAY, BUSY_DAY + timedelta(days=1), 40, day_aligned(timedelta(minutes=1))),
    (7, "minute", BUSY_DAY + timedelta(hours=3, minutes=10), BUSY_DAY + timedelta(hours=20), 9,
     day_aligned(timedelta(minutes=7))),
    (5, "minute", datetime(2026, 10, 5, 10, 1, tzinfo=UTC), datetime(2026, 10, 5, 13, tzinfo=UTC),
     4, day_aligned(timedelta(minutes=5))),
    (10, "minute", BUSY_DAY, BUSY_DAY + timedelta(days=1), 13, day_aligned(timedelta(minutes=10))),
    (45, "minute", BUSY_DAY - timedelta(days=3), BUSY_DAY + timedelta(days=2), 6,
     day_aligned(timedelta(minutes=45))),
    (1, "hour", BUSY_DAY - timedelta(days=1), BUSY_DAY + timedelta(days=2), 5,
     day_aligned(timedelta(hours=1))),
    (5, "hour", SEASON_START + timedelta(days=30, hours=7), SEASON_END, 11,
     day_aligned(timedelta(hours=5))),
    (30, "hour", SEASON_START, SEASON_END, 8, day_aligned(timedelta(hours=30))),
    (1, "day", SEASON_START, SEASON_END, 7, from_origin(timedelta(days=1), EPOCH)),
    (3, "day", SEASON_START + timedelta(days=1), SEASON_END, 4,
     from_origin(timedelta(days=3), EPOCH)),
    (1, "week", SEASON_START + timedelta(days=2), SEASON_END, 3,
     from_origin(timedelta(weeks=1), MONDAY)),
    (2, "week", SEASON_START, SEASON_END, 2, from_origin(timedelta(weeks=2), MONDAY)),
    (1, "month", SEASON_START, SEASON_END, 1, calendar(1)),
    (2, "month", SEASON_START - timedelta(days=20), SEASON_END, 1, calendar(2)),
    (1, "quarter", SEASON_START, SEASON_END, 1, calendar(3)),
    (1, "year", datetime(2025, 1, 1, tzinfo=UTC), SEASON_END, 1, calendar(12)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("multiplier", "timespan", "start", "end", "limit", "bar_start"),
    PAGED,
    ids=[f"{m}-{span}" for m, span, *_ in PAGED],
)
def test_paging_through_many_pages_gives_every_bar_once_in_both_orders(
    massive: RESTClient,
    season: list[dict[str, Any]],
    multiplier: int,
    timespan: str,
    start: datetime,
    end: datetime,
    limit: int,
    bar_start: Callable[[datetime], datetime],
) -> None:
    expected = bars_of(season, bar_start, start, end)
    assert len(expected) > 1
    # `to` in milliseconds is the start of the last bar it includes.
    bounds = ("AAPL", multiplier, timespan, ms(start), ms(end) - 1)
    for sort, order in (("asc", expected), ("desc", expected[::-1])):
        bars = list(massive.list_aggs(*bounds, sort=sort, limit=limit))
        assert as_tuples(bars) == [e[:6] for e in order], sort
        assert [b.volume for b in bars] == pytest.approx([e[6] for e in order])
        assert [b.vwap for b in bars] == pytest.approx([e[7] for e in order])


@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_the_last_page_has_no_next_url_even_when_full(
    client: httpx.Client, season: list[dict[str, Any]], sort: str
) -> None:
    every_day = bars_of(season, from_origin(timedelta(days=1), EPOCH), SEASON_START, SEASON_END)
    assert len(every_day) == 123  # a trade every day: pages of 41 are all full
    url: str | None = f"/v2/aggs/ticker/AAPL/range/1/day/2026-07-01/2026-10-31?sort={sort}&limit=41"
    pages = []
    while url:
        pages.append(client.get(url).json())
        url = pages[-1].get("next_url")
    assert [p["resultsCount"] for p in pages] == [41, 41, 41]
    days = [bar["t"] for page in pages for bar in page["results"]]
    assert days == sorted((e[0] for e in every_day), reverse=sort == "desc")


@pytest.mark.usefixtures("two_days")
def test_epoch_millisecond_bounds_include_bars_starting_at_to(
    massive: RESTClient, db: Connection
) -> None:
    start = datetime(2026, 11, 19, 10, 0, tzinfo=UTC)
    end = datetime(2026, 11, 19, 16, 0, tzinfo=UTC)
    bars = massive.get_aggs("AAPL", 1, "hour", ms(start), ms(end))
    expected = [e for e in reference(db, "1h") if start <= e[1] <= end]
    assert [b.timestamp for b in bars] == [ms(e[1]) for e in expected]


@pytest.mark.usefixtures("two_days")
def test_weekly_and_monthly_bars_hold_the_days_trades(massive: RESTClient, db: Connection) -> None:
    [(count,)] = db.execute("SELECT count(*) FROM trades WHERE symbol = 'AAPL'").fetchall()
    for timespan, start in (("week", datetime(2026, 11, 16, tzinfo=UTC)),
                            ("month", datetime(2026, 11, 1, tzinfo=UTC))):  # fmt: skip
        [bar] = massive.get_aggs("AAPL", 1, timespan, "2026-11-01", "2026-11-30")
        assert (bar.timestamp, bar.transactions) == (ms(start), count)


def test_an_unknown_ticker_has_no_results(massive: RESTClient, client: httpx.Client) -> None:
    body = client.get("/v2/aggs/ticker/NOPE/range/1/day/2026-11-01/2026-11-30").json()
    assert (body["status"], body["resultsCount"]) == ("OK", 0)
    assert "results" not in body and "next_url" not in body
    assert massive.get_aggs("NOPE", 1, "day", "2026-11-01", "2026-11-30") == []


def test_the_last_trade_is_the_latest_accepted(
    massive: RESTClient, client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(1, ts="2026-11-20T10:00:00Z", price=10.0)])
    drain_inbox(db)
    send(client, [tick(2, ts="2026-11-20T10:00:01Z", price=11.0, volume=7)])  # still pending
    trade = massive.get_last_trade("AAPL")
    assert (trade.ticker, trade.price, trade.size, trade.id) == ("AAPL", 11.0, 7, "e-2")
    assert trade.sip_timestamp == ms(datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC)) * 1_000_000
    with pytest.raises(BadResponse):
        massive.get_last_trade("NOPE")


def test_the_last_trade_ignores_resends_and_earlier_pending_trades(
    massive: RESTClient, client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(1, ts="2026-11-20T10:00:05Z", price=10.0)])
    drain_inbox(db)
    send(client, [tick(1, ts="2026-11-20T10:00:09Z", price=99.0)])  # a resend: not a trade
    send(client, [tick(2, ts="2026-11-20T10:00:04Z", price=12.0)])  # pending, but earlier
    assert massive.get_last_trade("AAPL").id == "e-1"
    send(client, [tick(3, ts="2026-11-20T10:00:05Z", price=13.0)])  # a tie: the later accepted
    assert (massive.get_last_trade("AAPL").id, massive.get_last_trade("AAPL").price) == ("e-3", 13)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/aggs/ticker/AAPL/range/1/fortnight/2026-11-01/2026-11-30",
        "/v2/aggs/ticker/AAPL/range/0/day/2026-11-01/2026-11-30",
        "/v2/aggs/ticker/AAPL/range/1/day/2026-11-30/2026-11-01",
        "/v2/aggs/ticker/AAPL/range/1/day/yesterday/2026-11-01",
        "/v2/aggs/ticker/AAPL/range/1/day/2026-11-01/2026-11-30?limit=50001",
        "/v2/aggs/ticker/AAPL/range/1/day/2026-11-01/2026-11-30?sort=sideways",
        "/v2/aggs/ticker/AAPL/range/1/day/0/99999999999999999",  # beyond the year 9999
    ],
)
def test_bad_aggregate_requests_get_a_422(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_a_range_to_the_calendar_end_is_an_answer(client: httpx.Client) -> None:
    response = client.get("/v2/aggs/ticker/AAPL/range/1/day/9999-12-30/9999-12-31")
    assert response.status_code == 200
    assert response.json()["resultsCount"] == 0


def test_a_bearer_token_does_not_break_public_reads(client: httpx.Client) -> None:
    headers = {"Authorization": "Bearer some-polygon-key"}
    assert httpx.get(f"{client.base_url}/v2/aggs/ticker/AAPL/range/1/day/2026-11-01/2026-11-02",
                     headers=headers).status_code == 200  # fmt: skip
    assert httpx.get(f"{client.base_url}/symbols", headers=headers).status_code == 200
