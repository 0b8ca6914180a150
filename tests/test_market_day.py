"""MARKET_TIMEZONE: with the market in New York, a 1d candle is a New York day (23 hours on
2026-03-08, 25 on 2026-11-01), starting at New York midnight, on every path (live reads of pending
trades, the micro-batch merge, the day recomputation, /candles, Polygon day bars, the SQL
reference), equal to trades grouped here by their New York date; intraday intervals stay aligned
to the epoch; a zone whose offset is not whole hours is refused."""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from massive import RESTClient
from massive.websocket.models import EquityAgg
from pydantic import ValidationError

from core.config import Settings
from core.db import Connection, connect, market_zone, set_market_timezone
from core.intervals import INTERVALS, day_window, market_date
from mdp.processes import api_server, spawn_mdp
from mdp.reconcile import candle_differences
from pipelines.candles import recompute_day
from pipelines.ingestion import promote_batch
from pipelines.lake import candle_file, export_day, trade_file
from tests.conftest import PASSWORD, USER, api_env
from tests.support import tick
from tests.test_conditions import (
    CUTS,
    ON_THE_DATABASE,
    Bar,
    rule_bar,
    same,
    send_in_random_batches,
)
from tests.test_conditions import stored_candles as stored
from tests.test_websocket import connected, live, post, until

NEW_YORK = ZoneInfo("America/New_York")
# Moments the trades cluster around (a few hours either side): New York midnights in winter (05:00
# UTC) and summer (04:00 UTC), both ends of the 23-hour day (clocks jump at 07:00 UTC) and of the
# 25-hour day (the hour 01:00-02:00 comes twice, from 05:00 UTC to 07:00 UTC).
ANCHORS = [
    datetime(2026, 1, 15, 5, tzinfo=UTC),
    datetime(2026, 3, 8, 5, tzinfo=UTC),
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 3, 9, 4, tzinfo=UTC),
    datetime(2026, 11, 1, 4, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
    datetime(2026, 11, 2, 5, tzinfo=UTC),
]
WINDOW = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
SYMBOLS = ("AAPL", "MSFT")


@pytest.fixture(scope="module")
def new_york_url(database_url: str) -> Iterator[str]:
    """An API with MARKET_TIMEZONE=America/New_York, the database's market zone New York; UTC
    again afterwards (the database is the whole session's)."""
    try:
        set_market_timezone(database_url, "America/New_York")
        env = api_env(database_url) | {"MARKET_TIMEZONE": "America/New_York"}
        with api_server(env) as url:
            yield url
    finally:
        set_market_timezone(database_url, "UTC")


@pytest.fixture
def new_york(new_york_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=new_york_url, auth=(USER, PASSWORD), timeout=10) as c:
        yield c


def expected(trades: list[tuple[str, datetime, float, float]], interval: str) -> dict[Any, Bar]:
    """Candles by (symbol, bucket start): 1d groups the trades by their New York date and starts
    at its midnight, the others by epoch-aligned buckets; open and close by time, then order."""
    buckets: defaultdict[tuple[str, datetime], list[tuple[float, float]]] = defaultdict(list)
    width = INTERVALS[interval]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for symbol, ts, price, volume in sorted(trades, key=lambda t: t[1]):  # stable: sent order
        if interval == "1d":
            new_york_midnight = datetime.combine(ts.astimezone(NEW_YORK).date(), time(), NEW_YORK)
            start = new_york_midnight.astimezone(UTC)
        else:
            start = epoch + (ts - epoch) // width * width
        buckets[(symbol, start)].append((price, volume))
    every_field = (True, True, True)  # regular trades
    return {
        key: rule_bar([(price, volume, every_field) for price, volume in members])
        for key, members in buckets.items()
    }


def served(client: httpx.Client, interval: str) -> dict[Any, Bar]:
    bars: dict[Any, Bar] = {}
    for symbol in SYMBOLS:
        params: dict[str, str | int] = {"symbol": symbol, "interval": interval, "limit": 10_000}
        params |= {"start": WINDOW[0].isoformat(), "end": WINDOW[1].isoformat()}
        page = client.get("/candles", params=params)
        assert page.status_code == 200, page.text
        for c in page.json()["candles"]:
            bars[(symbol, datetime.fromisoformat(c["bucket_start"]))] = tuple(
                c[f] for f in ("open", "high", "low", "close", "volume", "vwap", "trade_count")
            )
    return bars


def polygon_days(url: str) -> dict[Any, Bar]:
    rest = RESTClient(api_key="any-key", base=url, retries=0)
    bars: dict[Any, Bar] = {}
    for symbol in SYMBOLS:
        for b in rest.list_aggs(symbol, 1, "day", "2026-01-01", "2026-11-30", limit=50_000):
            start = datetime.fromtimestamp(b.timestamp / 1000, UTC)
            bars[(symbol, start)] = (
                b.open, b.high, b.low, b.close, b.volume, b.vwap, b.transactions,
            )  # fmt: skip
    return bars


trade_strategy = st.tuples(
    st.sampled_from(SYMBOLS),
    st.sampled_from(ANCHORS),
    st.integers(-3 * 3600, 3 * 3600),  # seconds from the anchor
    st.sampled_from([10.0, 10.5, 11.0, 9.5, 12.25]),
    st.integers(1, 500),
)


@settings(ON_THE_DATABASE, max_examples=25)
@given(
    picked=st.lists(trade_strategy, min_size=1, max_size=40),
    cuts=CUTS,
    cancels=st.sets(st.integers(0, 39), max_size=6),
)
def test_a_new_york_day_is_one_candle_on_every_path(
    new_york: httpx.Client,
    new_york_url: str,
    db: Connection,
    database_url: str,
    picked: list[tuple[str, datetime, int, float, int]],
    cuts: list[bool],
    cancels: set[int],
) -> None:
    """Trades around New York midnights and daylight-saving changes, sent in random batches with
    micro-batches between some: read live (pending trades merged), merged by micro-batches,
    recomputed a day at a time, restated by cancels, served by /candles and as Polygon day bars,
    each equal to the trades grouped by New York date; the hours stay epoch-aligned; the SQL
    reference agrees."""
    db.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches")
    trades = [
        (symbol, anchor + timedelta(seconds=seconds), price, float(volume))
        for symbol, anchor, seconds, price, volume in picked
    ]
    ticks = [
        tick(n, symbol=symbol, ts=ts.isoformat(), price=price, volume=volume)
        for n, (symbol, ts, price, volume) in enumerate(trades)
    ]
    send_in_random_batches(new_york, db, ticks, cuts)
    for interval in ("1h", "1d"):
        assert same(served(new_york, interval), expected(trades, interval)), interval

    while promote_batch(db).inbox_rows:
        pass
    for interval in INTERVALS:
        assert same(stored(db, interval), expected(trades, interval)), interval
    assert candle_differences(db) == []

    for day in {market_date(ts, NEW_YORK) for _, ts, _, _ in trades}:
        recompute_day(db, database_url, day)
    for interval in INTERVALS:
        assert same(stored(db, interval), expected(trades, interval)), interval
    assert candle_differences(db) == []
    assert all(start.astimezone(NEW_YORK).time() == time() for _, start in stored(db, "1d"))

    cancelled = sorted(n for n in cancels if n < len(trades))
    if cancelled:
        asked = [{"source": "XNAS", "event_id": f"e-{n}"} for n in cancelled]
        answer = new_york.post("/ingest/cancels", json={"trades": asked})
        assert answer.status_code == 200, answer.text
        trades = [t for n, t in enumerate(trades) if n not in cancels]
    for interval in INTERVALS:
        assert same(stored(db, interval), expected(trades, interval)), interval
    assert candle_differences(db) == []

    assert same(served(new_york, "1d"), expected(trades, "1d"))
    assert same(polygon_days(new_york_url), expected(trades, "1d"))


def test_the_days_around_a_new_york_midnight_and_the_clock_changes(
    new_york: httpx.Client, db: Connection, database_url: str
) -> None:
    """04:59 and 05:01 UTC in winter are two New York days; 2026-03-08 lasts 23 hours and
    2026-11-01 25, each one candle from its midnight."""
    times = [
        "2026-01-15T04:59:00Z", "2026-01-15T05:01:00Z",
        "2026-03-08T05:00:00Z", "2026-03-09T03:59:59Z",  # the 23-hour day, first and last second
        "2026-11-01T04:00:00Z", "2026-11-02T04:59:59Z",  # the 25-hour day
    ]  # fmt: skip
    ticks = [tick(n, ts=ts, price=10.0 + n, volume=1) for n, ts in enumerate(times)]
    assert new_york.post("/ingest/ticks", json=ticks).status_code == 202
    promote_batch(db)
    days = sorted((start, bar[6]) for (_, start), bar in stored(db, "1d").items())
    assert days == [
        (datetime(2026, 1, 14, 5, tzinfo=UTC), 1),
        (datetime(2026, 1, 15, 5, tzinfo=UTC), 1),
        (datetime(2026, 3, 8, 5, tzinfo=UTC), 2),
        (datetime(2026, 11, 1, 4, tzinfo=UTC), 2),
    ]
    assert day_window(date(2026, 3, 8), NEW_YORK)[1] - days[2][0] == timedelta(hours=23)
    assert day_window(date(2026, 11, 1), NEW_YORK)[1] - days[3][0] == timedelta(hours=25)
    for day in (date(2026, 3, 8), date(2026, 11, 1)):
        [outcome] = recompute_day(db, database_url, day, ["1d"])
        assert outcome.trades == 2
    explained = {"symbol": "AAPL", "interval": "1d", "bucket_start": "2026-11-01T04:00:00Z"}
    listed = new_york.get("/candles/trades", params=explained).json()["trades"]
    assert [datetime.fromisoformat(t["ts"]) for t in listed] == [
        datetime(2026, 11, 1, 4, tzinfo=UTC),
        datetime(2026, 11, 2, 4, 59, 59, tzinfo=UTC),
    ]
    utc_midnight = explained | {"bucket_start": "2026-11-01T00:00:00Z"}
    assert new_york.get("/candles/trades", params=utc_midnight).status_code == 422
    weeks = new_york.get("/v2/aggs/ticker/AAPL/range/1/week/2026-03-01/2026-03-14").json()
    [week] = weeks["results"]  # Monday 2026-03-02 to Sunday 2026-03-08, New York
    assert week["t"] == int(datetime(2026, 3, 2, 5, tzinfo=UTC).timestamp() * 1000)
    assert week["n"] == 2
    month = new_york.get("/v2/aggs/ticker/AAPL/range/1/month/2026-11-01/2026-11-30").json()
    assert [(b["t"], b["n"]) for b in month["results"]] == [
        (int(datetime(2026, 11, 1, 4, tzinfo=UTC).timestamp() * 1000), 2)
    ]
    assert candle_differences(db) == []


def test_minute_bars_carry_their_new_york_day_so_far(new_york_url: str, db: Connection) -> None:
    """The `AM` bars of New York's last minute of 2026-01-14 (04:59 UTC) and first of 2026-01-15
    (05:00 UTC) each carry their own day's volume and open, though both are UTC's 2026-01-15."""
    minutes = [datetime(2026, 1, 15, 4, 59, tzinfo=UTC), datetime(2026, 1, 15, 5, tzinfo=UTC)]
    starts = [int(m.timestamp() * 1000) for m in minutes]
    ticks = [
        tick(1, ts="2026-01-15T04:59:30Z", price=10.0, volume=3),
        tick(2, ts="2026-01-15T05:00:30Z", price=11.0, volume=5),
    ]

    async def scenario() -> list[EquityAgg]:
        bars: list[EquityAgg] = []
        async with connected(new_york_url, "key", "T.AAPL", "AM.AAPL", bars=bars) as (_, trades):
            await live(new_york_url, trades)
            await post(new_york_url, ticks)
            await until("both bars", lambda: {b.start_timestamp for b in bars} >= set(starts))
            return sorted(
                (b for b in bars if b.start_timestamp in starts), key=lambda b: b.start_timestamp
            )

    bars = asyncio.run(scenario())
    assert [(b.volume, b.accumulated_volume, b.official_open_price) for b in bars] == [
        (3, 3, 10.0),
        (5, 5, 11.0),
    ]


def test_the_lake_files_a_trade_under_its_new_york_date(
    new_york: httpx.Client, db: Connection, database_url: str, tmp_path: Path
) -> None:
    ticks = [
        tick(1, ts="2026-11-02T04:59:59Z", volume=3),  # the last second of the 25-hour day
        tick(2, ts="2026-11-02T05:00:00Z", volume=5),
    ]
    assert new_york.post("/ingest/ticks", json=ticks).status_code == 202
    promote_batch(db)
    exported = [export_day(database_url, tmp_path, date(2026, 11, d)) for d in (1, 2)]
    assert [(e.trades, e.candles["1d"]) for e in exported] == [(1, 1), (1, 1)]
    [day] = pl.read_parquet(candle_file(tmp_path, "1d", date(2026, 11, 1))).to_dicts()
    assert (day["bucket_start"], day["volume"]) == (datetime(2026, 11, 1, 4, tzinfo=UTC), 3)
    trades = pl.read_parquet(trade_file(tmp_path, date(2026, 11, 2)))
    assert trades["event_id"].to_list() == ["e-2"]


def test_today_on_the_ticker_is_the_new_york_day(new_york: httpx.Client, db: Connection) -> None:
    """A trade a minute before New York's midnight today counts in yesterday, one a minute after
    in today, whatever the UTC date."""
    today = market_date(datetime.now(UTC), NEW_YORK)
    midnight = day_window(today, NEW_YORK)[0]
    ticks = [
        tick(1, ts=(midnight - timedelta(minutes=1)).isoformat(), price=10.0, volume=3),
        tick(2, ts=(midnight + timedelta(minutes=1)).isoformat(), price=11.0, volume=5),
    ]
    assert new_york.post("/ingest/ticks", json=ticks).status_code == 202
    for promoted in (False, True):  # pending, then materialized
        if promoted:
            promote_batch(db)
        figures = new_york.get("/tickers/AAPL").json()["today"]
        if figures["date"] != market_date(datetime.now(UTC), NEW_YORK).isoformat():
            pytest.skip("New York's day changed during the test")
        assert figures["date"] == today.isoformat()
        assert (figures["open"], figures["volume"], figures["trade_count"]) == (11.0, 5.0, 1)
        assert figures["previous_close"] == 10.0


def test_a_changed_zone_names_the_days_to_recompute(
    new_york: httpx.Client, db: Connection, database_url: str
) -> None:
    ticks = [
        tick(1, ts="2026-03-08T02:00:00Z"),  # New York's 2026-03-07, UTC's 2026-03-08
        tick(2, ts="2026-03-10T12:00:00Z"),
    ]
    assert new_york.post("/ingest/ticks", json=ticks).status_code == 202
    promote_batch(db)
    try:
        advice = set_market_timezone(database_url, "Asia/Tokyo")
        assert advice is not None
        assert "from America/New_York to Asia/Tokyo" in advice
        assert advice.endswith("run `mdp backfill 2026-03-07 2026-03-10`")
        assert set_market_timezone(database_url, "Asia/Tokyo") is None  # nothing changed
        with connect(database_url) as conn:
            assert str(market_zone(conn)) == "Asia/Tokyo"
    finally:
        set_market_timezone(database_url, "America/New_York")


@pytest.mark.parametrize(
    ("zone", "reason"),
    [
        ("Asia/Kolkata", "must be a whole number of hours"),  # UTC+05:30
        ("Australia/Lord_Howe", "must be a whole number of hours"),  # a half-hour summer time
        ("Mars/Olympus_Mons", "not a known time zone"),
    ],
)
def test_a_zone_that_splits_hours_or_is_unknown_is_refused_at_startup(
    database_url: str, zone: str, reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(market_timezone=zone)
    env = api_env(database_url) | {"MARKET_TIMEZONE": zone}
    serve = spawn_mdp(["serve", "--port", "9"], env, stderr=subprocess.PIPE)
    _, stderr = serve.communicate(timeout=60)
    assert serve.returncode == 2
    assert f"refusing to start: Value error, MARKET_TIMEZONE {zone!r}" in stderr.decode()
    assert reason in stderr.decode()
