"""`/candles?fill=` sends every bucket of a page (the empty ones added, flagged, never stored) and
pages exactly; `symbols=` reads several symbols in one request, every page on the same buckets;
`/candles/latest` serves every symbol's current bar from memory, reading nothing while nothing
changed. Each is held to candles computed here from the trades sent, on buckets counted here."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.db import Connection, connect
from core.intervals import INTERVALS, bucket_starts
from pipelines.ingestion import drain_inbox
from tests.support import counter_totals, send, tick, wait_for
from tests.test_market_day import new_york, new_york_url

__all__ = ["new_york", "new_york_url"]  # fixtures for the market-day test below

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
START = datetime(2026, 11, 18, 14, 0, tzinfo=UTC)
END = START + timedelta(minutes=40)
ODD_LOT = 37  # a sale condition that counts in volume only: its bucket's candle has no prices
Trade = tuple[str, datetime, float, float, list[int] | None]

# What each symbol traded around [START, END). Promoted first, then still pending.
PROMOTED: list[Trade] = [
    ("AAPL", START - timedelta(minutes=10), 100.0, 10, None),  # before: `previous` starts here
    ("AAPL", START + timedelta(minutes=2, seconds=1), 101.0, 5, None),
    ("AAPL", START + timedelta(minutes=2, seconds=30), 99.5, 7, None),
    ("AAPL", START + timedelta(minutes=5), 102.0, 3, None),  # on a 5m boundary
    ("AAPL", START + timedelta(minutes=9, seconds=20), 180.0, 50, [ODD_LOT]),  # no prices
    ("MSFT", START + timedelta(minutes=1), 400.0, 1, None),
    ("MSFT", START + timedelta(minutes=1, seconds=59), 401.0, 2, None),
    ("TSLA", START - timedelta(days=3), 250.0, 4, None),  # long before, and nothing since
]
PENDING: list[Trade] = [
    ("AAPL", START + timedelta(minutes=17, seconds=59.999999), 103.0, 1, None),
    ("AAPL", START + timedelta(minutes=30), 104.0, 2, None),
    ("AAPL", START + timedelta(minutes=40, microseconds=-1), 105.0, 2, None),  # the last µs
    ("AAPL", END, 999.0, 1, None),  # at the end: outside
    ("MSFT", START + timedelta(minutes=33), 402.5, 3, [ODD_LOT]),
    ("MSFT", START + timedelta(minutes=33, seconds=1), 402.0, 3, None),
]
SYMBOLS = ["AAPL", "MSFT", "TSLA", "GOOGL"]  # GOOGL never traded


def _ticks(trades: list[Trade], first: int) -> list[dict[str, Any]]:
    return [
        tick(first + n, symbol=symbol, ts=ts.isoformat(), price=price, volume=volume)
        | ({"conditions": conditions} if conditions else {})
        for n, (symbol, ts, price, volume, conditions) in enumerate(trades)
    ]


@pytest.fixture
def traded(client: httpx.Client, db: Connection) -> None:
    """PROMOTED materialized, PENDING accepted and still in the inbox."""
    send(client, _ticks(PROMOTED, 0))
    drain_inbox(db)
    send(client, _ticks(PENDING, len(PROMOTED)))


def bucket_of(moment: datetime, interval: str, zone: tzinfo = UTC) -> datetime:
    if interval == "1d":
        return datetime.combine(moment.astimezone(zone).date(), time(), zone).astimezone(UTC)
    width = INTERVALS[interval]
    return EPOCH + (moment - EPOCH) // width * width


def expected_candles(interval: str) -> dict[str, dict[datetime, dict[str, Any]]]:
    """Candles by symbol and bucket from the trades sent, by the sale-condition rules: open and
    close the first and last priced trade by time (ties: sent order), prices null in a bucket of
    odd lots only, is_final false where a trade is pending."""
    members: defaultdict[tuple[str, datetime], list[tuple[Trade, bool]]] = defaultdict(list)
    for trade in PROMOTED + PENDING:
        members[(trade[0], bucket_of(trade[1], interval))].append((trade, trade in PENDING))
    candles: defaultdict[str, dict[datetime, dict[str, Any]]] = defaultdict(dict)
    for (symbol, start), found in members.items():
        trades = sorted((trade for trade, _ in found), key=lambda t: t[1])
        priced = [t[2] for t in trades if not t[4]]
        volume = sum(t[3] for t in trades)
        candles[symbol][start] = {
            "bucket_start": start,
            "open": priced[0] if priced else None,
            "high": max(priced, default=None),
            "low": min(priced, default=None),
            "close": priced[-1] if priced else None,
            "volume": volume,
            "vwap": sum(t[2] * t[3] for t in trades) / volume,
            "trade_count": len(trades),
            "is_final": not any(pending for _, pending in found),
        }
    return candles


def expected_buckets(interval: str, start: datetime, end: datetime, zone: tzinfo) -> list[datetime]:
    """Every bucket starting in [start, end), counted without the product's helpers: epoch steps,
    or each local date's midnight in `zone` for 1d."""
    if interval == "1d":
        days = (start.astimezone(zone).date() + timedelta(days=n) for n in range(-1, 400))
        midnights = (datetime.combine(d, time(), zone).astimezone(UTC) for d in days)
        return [m for m in midnights if start <= m < end]
    width = INTERVALS[interval] // timedelta(seconds=1)
    first = math.ceil((start - EPOCH).total_seconds() / width)
    last = math.ceil((end - EPOCH).total_seconds() / width)
    return [EPOCH + timedelta(seconds=k * width) for k in range(first, last)]


def expected_series(
    symbol: str, interval: str, fill: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Every bucket of [start, end): the candle where there is one, else a filled bucket with the
    last close known before it (`previous`) or null prices (`null`)."""
    real = expected_candles(interval)[symbol]
    earlier = [c["close"] for s, c in sorted(real.items()) if s < start and c["close"] is not None]
    close = earlier[-1] if earlier else None
    series = []
    for bucket in expected_buckets(interval, start, end, UTC):
        if bucket in real:
            series.append(real[bucket] | {"filled": False})
            close = real[bucket]["close"] if real[bucket]["close"] is not None else close
        else:
            price = close if fill == "previous" else None
            series.append(
                {"bucket_start": bucket, "open": price, "high": price, "low": price,
                 "close": price, "volume": 0, "vwap": None, "trade_count": 0, "is_final": True,
                 "filled": True}
            )  # fmt: skip
    return series


def comparable(candle: dict[str, Any]) -> dict[str, Any]:
    """A served candle in the terms of `expected_series` (vwap up to summation order)."""
    fields = {k: v for k, v in candle.items() if k != "revision"}
    fields["bucket_start"] = datetime.fromisoformat(candle["bucket_start"])
    if fields["vwap"] is not None:
        fields["vwap"] = pytest.approx(fields["vwap"], rel=1e-12)
    return fields


def pages(client: httpx.Client, **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of /candles, following next_page_token."""
    token = None
    while True:
        page = client.get("/candles", params=params | ({"page_token": token} if token else {}))
        assert page.status_code == 200, page.text
        yield page.json()
        if (token := page.json()["next_page_token"]) is None:
            return


@pytest.mark.parametrize("fill", ["previous", "null"])
@pytest.mark.parametrize("interval", ["1m", "5m"])
def test_every_bucket_is_sent_once_and_each_page_holds_limit_of_them(
    client: httpx.Client, traded: None, interval: str, fill: str
) -> None:
    for start in (START, START + timedelta(seconds=30)):  # a range starting inside a bucket
        expected = expected_series("AAPL", interval, fill, start, END)
        for limit in (1, 3, 7, 1000):
            params = {"symbol": "AAPL", "interval": interval, "fill": fill, "limit": limit}
            params |= {"start": start.isoformat(), "end": END.isoformat()}
            read = list(pages(client, **params))
            assert [len(p["candles"]) for p in read[:-1]] == [limit] * (len(read) - 1)
            assert 1 <= len(read[-1]["candles"]) <= limit
            served = [comparable(c) for p in read for c in p["candles"]]
            assert served == expected, (interval, fill, start, limit)


def test_filled_buckets_are_never_stored(
    client: httpx.Client, db: Connection, traded: None
) -> None:
    before = db.execute("SELECT count(*) FROM candles").fetchone()
    params = {"symbol": "AAPL", "fill": "previous", "start": START.isoformat()}
    assert any(
        c["filled"] for p in pages(client, **params, end=END.isoformat()) for c in p["candles"]
    )
    assert db.execute("SELECT count(*) FROM candles").fetchone() == before


def test_without_fill_candles_carry_no_filled_flag(client: httpx.Client, traded: None) -> None:
    params = {"symbol": "AAPL", "start": START.isoformat(), "end": END.isoformat()}
    candles = [c for p in pages(client, **params) for c in p["candles"]]
    assert candles and all("filled" not in c for c in candles)


@pytest.mark.parametrize("fill", [None, "previous"])
def test_several_symbols_in_one_request_page_on_the_same_buckets(
    client: httpx.Client, traded: None, fill: str | None
) -> None:
    asked = "MSFT,AAPL,TSLA,GOOGL,AAPL"  # a repeat is answered once, in the order first asked
    params = {"symbols": asked, "start": START.isoformat(), "end": END.isoformat(), "limit": 3}
    params |= {"fill": fill} if fill else {}
    by_symbol: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for page in pages(client, **params):
        assert [r["symbol"] for r in page["results"]] == ["MSFT", "AAPL", "TSLA", "GOOGL"]
        counts = [len(r["candles"]) for r in page["results"]]
        token = page["next_page_token"]
        if fill:  # every symbol has the page's buckets, filled or not
            assert len(set(counts)) == 1 and (token is None or counts[0] == 3)
        else:  # no symbol has more than limit, one has exactly limit while pages follow
            assert max(counts) <= 3 and (token is None or max(counts) == 3)
        for result in page["results"]:
            assert all(c["bucket_start"] <= (token or "~") for c in result["candles"])
            by_symbol[result["symbol"]] += result["candles"]
    for symbol in ("MSFT", "AAPL", "TSLA", "GOOGL"):
        served = [comparable(c) for c in by_symbol[symbol]]
        if fill:
            assert served == expected_series(symbol, "1m", fill, START, END), symbol
        else:
            real = expected_candles("1m")[symbol]
            assert served == [real[s] for s in sorted(real) if START <= s < END], symbol


def test_several_symbols_as_an_arrow_stream_name_each_row_and_flag_the_filled(
    client: httpx.Client, traded: None
) -> None:
    params: dict[str, Any] = {"symbols": "AAPL,MSFT", "fill": "null", "limit": 50}
    params |= {"start": START.isoformat(), "end": END.isoformat()}
    arrow = client.get(
        "/candles", params=params, headers={"Accept": "application/vnd.apache.arrow.stream"}
    )
    frame = pl.read_ipc_stream(arrow.content)
    as_json = client.get("/candles", params=params).json()["results"]
    assert frame.columns[0] == "symbol" and frame.columns[-1] == "filled"
    assert frame["symbol"].to_list() == [r["symbol"] for r in as_json for _ in r["candles"]]
    assert frame["filled"].to_list() == [c["filled"] for r in as_json for c in r["candles"]]
    assert frame["close"].to_list() == [c["close"] for r in as_json for c in r["candles"]]


def test_a_year_of_filled_minutes_is_paged_not_refused(client: httpx.Client, traded: None) -> None:
    year: dict[str, Any] = {"symbol": "AAPL", "fill": "null", "limit": 10_000}
    year |= {"start": "2025-11-18T14:00:30Z", "end": "2026-11-18T14:00:00Z"}
    first = client.get("/candles", params=year).json()
    assert len(first["candles"]) == 10_000
    assert first["candles"][0]["bucket_start"] == "2025-11-18T14:01:00Z"
    assert first["next_page_token"] == first["candles"][-1]["bucket_start"]
    second = client.get("/candles", params=year | {"page_token": first["next_page_token"]})
    last = datetime.fromisoformat(first["next_page_token"])
    assert (
        second.json()["candles"][0]["bucket_start"]
        == f"{last + timedelta(minutes=1):%Y-%m-%dT%H:%M:%SZ}"
    )


@pytest.mark.parametrize(
    ("params", "code", "says"),
    [
        ({"symbols": "AAPL,NOPE,ZZZ"}, 404, "unknown symbols 'NOPE', 'ZZZ'"),
        ({"symbol": "AAPL", "symbols": "MSFT"}, 422, "either symbol or symbols"),
        ({}, 422, "either symbol or symbols"),
        ({"symbols": "AAPL,,MSFT"}, 422, "one of them is empty"),
        ({"symbols": ",".join(f"S{n}" for n in range(101))}, 422, "at most 100"),
        ({"symbols": ",".join(SYMBOLS * 3), "limit": 10_000}, 200, ""),  # 4 distinct: 40,000
        ({"symbols": ",".join(f"S{n}" for n in range(11)), "limit": 10_000}, 422, "100,000"),
        ({"symbol": "AAPL", "fill": "linear"}, 422, "invalid request"),
    ],
)
def test_refusals_say_what_is_wrong(
    client: httpx.Client, params: dict[str, Any], code: int, says: str
) -> None:
    answer = client.get("/candles", params=params)
    assert answer.status_code == code, answer.text
    assert says in answer.json().get("detail", "")


@settings(max_examples=200, deadline=None)
@given(
    interval=st.sampled_from(list(INTERVALS)),
    zone=st.sampled_from([UTC, NEW_YORK, ZoneInfo("Asia/Kolkata"), ZoneInfo("Europe/London")]),
    start=st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    length=st.timedeltas(timedelta(0), timedelta(days=20)),
    most=st.integers(1, 50),
)
def test_the_buckets_of_a_range_are_every_interval_start_or_market_midnight(
    interval: str, zone: tzinfo, start: datetime, length: timedelta, most: int
) -> None:
    if interval != "1d" and length > timedelta(hours=6):
        length = length % timedelta(hours=6)
    expected = expected_buckets(interval, start, start + length, zone)
    assert bucket_starts(interval, start, start + length, zone, most) == expected[:most]


def latest_reads(client: httpx.Client) -> dict[str, float]:
    return counter_totals(client, "mdp_latest_candles_reads", "source")


def latest_of(client: httpx.Client, symbol: str) -> dict[str, Any] | None:
    candles = client.get("/candles/latest").json()["candles"]
    return next((c for c in candles if c["symbol"] == symbol), None)


def expected_latest(interval: str) -> dict[str, dict[str, Any]]:
    """Each symbol's latest candle from the trades sent (the one at END included)."""
    return {
        symbol: candles[max(candles)] | {"symbol": symbol}
        for symbol, candles in expected_candles(interval).items()
    }


@pytest.mark.parametrize("interval", ["1m", "1h", "1d"])
def test_latest_is_each_symbols_last_candle_pending_trades_included(
    client: httpx.Client, traded: None, interval: str
) -> None:
    answer = client.get("/candles/latest", params={"interval": interval}).json()
    assert answer["interval"] == interval
    served = {c["symbol"]: comparable(c) for c in answer["candles"]}
    assert served == expected_latest(interval)  # GOOGL never traded: left out
    assert [c["symbol"] for c in answer["candles"]] == sorted(served)

    some = client.get("/candles/latest", params={"interval": interval, "symbols": "TSLA,GOOGL"})
    assert [c["symbol"] for c in some.json()["candles"]] == ["TSLA"]
    unknown = client.get("/candles/latest", params={"symbols": "AAPL,NOPE"})
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "unknown symbols 'NOPE'")


def test_latest_shows_an_acknowledged_trade_and_reads_nothing_while_nothing_changed(
    client: httpx.Client, db: Connection, traded: None, database_url: str
) -> None:
    first = client.get("/candles/latest").json()
    before = latest_reads(client)
    for _ in range(3):
        assert client.get("/candles/latest").json() == first
    after = latest_reads(client)
    assert after.get("database", 0) == before.get("database", 0)
    assert after["memory"] == before.get("memory", 0) + 3

    # With the tables it reads locked against any reader, it still answers: from memory.
    with connect(database_url) as locker:
        locker.execute("LOCK TABLE candles, trade_inbox, trades, symbols IN ACCESS EXCLUSIVE MODE")
        assert client.get("/candles/latest", timeout=10).json() == first
        locker.rollback()

    now = datetime.now(UTC)
    send(client, [tick(9_999, symbol="GOOGL", ts=now.isoformat(), price=175.5, volume=3)])
    latest = wait_for(
        "the acknowledged trade to show in /candles/latest",
        lambda: latest_of(client, "GOOGL"),
        timeout=5,
        poll=0.05,
    )
    assert latest is not None
    assert latest["bucket_start"] == f"{bucket_of(now, '1m'):%Y-%m-%dT%H:%M:%SZ}"
    assert (latest["close"], latest["volume"], latest["is_final"]) == (175.5, 3, False)
    assert latest_reads(client)["database"] > after.get("database", 0)


def test_a_filled_day_is_the_market_day_across_daylight_saving(
    new_york: httpx.Client, db: Connection
) -> None:
    """Last in this file: the market's zone stays New York's until the module ends.
    New York's 2026-03-08 lasts 23 hours: filled 1d buckets start at each New York midnight,
    and paging one day at a time skips none."""
    trades: list[Trade] = [
        ("AAPL", datetime(2026, 3, 6, 15, tzinfo=UTC), 50.0, 1, None),
        ("AAPL", datetime(2026, 3, 9, 3, 30, tzinfo=UTC), 51.0, 1, None),
    ]
    send(new_york, _ticks(trades, 10_000))
    start, end = datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 12, tzinfo=UTC)
    params = {"symbol": "AAPL", "interval": "1d", "fill": "previous", "limit": 1}
    params |= {"start": start.isoformat(), "end": end.isoformat()}
    read = [c for p in pages(new_york, **params) for c in p["candles"]]
    midnights = expected_buckets("1d", start, end, NEW_YORK)
    assert [datetime.fromisoformat(c["bucket_start"]) for c in read] == midnights
    by_day = {
        datetime.fromisoformat(c["bucket_start"]).astimezone(NEW_YORK).date(): c for c in read
    }
    assert by_day[date(2026, 3, 6)]["close"] == 50.0 and not by_day[date(2026, 3, 6)]["filled"]
    assert by_day[date(2026, 3, 7)]["close"] == 50.0 and by_day[date(2026, 3, 7)]["filled"]
    # 03:30 UTC on the 9th is still the 8th in New York (the 23-hour day).
    assert by_day[date(2026, 3, 8)]["close"] == 51.0 and not by_day[date(2026, 3, 8)]["filled"]
    assert by_day[date(2026, 3, 9)]["close"] == 51.0 and by_day[date(2026, 3, 9)]["filled"]
