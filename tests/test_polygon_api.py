"""The Polygon/Massive-compatible endpoints, driven by the official `massive` Python client pointed
at our base URL: bars equal an independent computation over trades, pagination follows next_url."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
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
