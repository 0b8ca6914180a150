"""Market-data reads over real HTTP: symbols, tickers, trade history and live candles, each equal
to what the canonical tables (plus the trades still pending in the inbox) say."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.db import Connection
from core.intervals import INTERVALS
from pipelines.ingestion import drain_inbox
from tests.candle_reference import reference
from tests.support import all_candles, send, tick

DAY = "2026-11-20"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_symbols_list_the_registered_symbols_with_their_trading_span(
    client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(1, ts=f"{DAY}T10:00:00Z"), tick(2, ts=f"{DAY}T11:00:00Z")])
    drain_inbox(db)
    symbols = {s["symbol"]: s for s in client.get("/symbols").json()["symbols"]}
    assert set(symbols) >= {"AAPL", "MSFT"}
    assert symbols["AAPL"]["first_trade_at"].startswith(f"{DAY}T10:00:00")
    assert symbols["AAPL"]["last_trade_at"].startswith(f"{DAY}T11:00:00")
    assert symbols["MSFT"]["first_trade_at"] is None


def test_a_symbol_registered_a_moment_ago_is_known_at_once(
    client: httpx.Client, db: Connection
) -> None:
    assert client.get("/tickers/NEWCO").status_code == 404  # the API has just looked
    db.execute("INSERT INTO symbols (symbol) VALUES ('NEWCO')")
    assert client.get("/tickers/NEWCO").status_code == 200
    assert client.get("/candles", params={"symbol": "NEWCO", "interval": "1m"}).status_code == 200
    for never_a_symbol in ("A%00B", "%ED%A0%80", "newco"):  # a NUL, a lone surrogate, lower case
        assert client.get(f"/tickers/{never_a_symbol}").status_code == 404


def test_a_ticker_shows_the_latest_trade_and_todays_figures_before_promotion(
    client: httpx.Client, db: Connection
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    yesterday = now - timedelta(days=1)
    send(client, [tick(1, ts=iso(yesterday), price=100.0)])
    drain_inbox(db)
    send(client, [tick(2, ts=iso(now - timedelta(seconds=2)), price=110.0, volume=10)])
    send(client, [tick(3, ts=iso(now - timedelta(seconds=1)), price=105.0, volume=5)])  # pending

    for path in ("/tickers/AAPL", "/tickets/AAPL"):
        body = client.get(path).json()
        assert body["last_trade"]["event_id"] == "e-3"
        assert body["last_trade"]["price"] == 105.0
        today = body["today"]
        assert (today["open"], today["high"], today["low"], today["last"]) == (110, 110, 105, 105)
        assert (today["volume"], today["trade_count"]) == (15, 2)
        assert today["previous_close"] == 100.0
        assert today["change"] == pytest.approx(5.0)
        assert today["change_percent"] == pytest.approx(5.0)
    assert client.get("/tickers/NOPE").status_code == 404


def test_history_pages_newest_first_and_returns_every_trade_once(
    client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(i, ts=f"{DAY}T10:00:{i // 3:02}Z") for i in range(25)])  # equal times
    drain_inbox(db)
    seen: list[str] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 7, **({"before": before} if before else {})}
        page = client.get("/tickers/AAPL/history", params=params).json()
        seen += [t["event_id"] for t in page["trades"]]
        before = page.get("next_before")
        if before is None:
            break
    assert seen == [f"e-{i}" for i in reversed(range(25))]
    plain_time = client.get("/tickets/AAPL/history", params={"before": f"{DAY}T10:00:01Z"})
    assert [t["event_id"] for t in plain_time.json()["trades"]] == ["e-2", "e-1", "e-0"]


def test_candles_equal_an_independent_computation_and_page_without_gaps_or_repeats(
    client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(i, ts=f"{DAY}T{i % 24:02}:{i % 60:02}:{i % 7:02}Z", price=50.0 + i % 13)
                  for i in range(400)])  # fmt: skip
    drain_inbox(db)
    window = {"symbol": "AAPL", "start": f"{DAY}T00:00:00Z", "end": "2026-11-21T00:00:00Z"}
    for interval in INTERVALS:
        served = all_candles(client, interval=interval, limit=37, **window)
        expected = reference(db, interval)
        assert [c["bucket_start"] for c in served] == [iso(e[1]) for e in expected]
        for got, want in zip(served, expected, strict=True):
            assert (got["open"], got["high"], got["low"], got["close"]) == want[2:6]
            assert got["trade_count"] == want[8]
            assert (got["volume"], got["vwap"]) == pytest.approx(want[6:8], rel=1e-12)
            assert got["is_final"] is True


def test_an_accepted_trade_is_in_the_current_candle_before_any_pipeline_run(
    client: httpx.Client, db: Connection
) -> None:
    if datetime.now(UTC).second > 45:  # keep the whole test inside one minute
        time.sleep(61 - datetime.now(UTC).second)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    at = [iso(minute + timedelta(seconds=s)) for s in range(3)]
    send(client, [tick(1, ts=at[1], price=10.0), tick(2, ts=at[2], price=12.0)])
    drain_inbox(db)  # materialized: open 10, close 12
    previous_minute = (minute - timedelta(microseconds=1)).isoformat()
    send(client, [
        tick(3, ts=at[2], price=11.0),  # same time as the close, accepted later: the new close
        tick(4, ts=at[0], price=8.0),  # earlier than the materialized open: the new open
        tick(5, ts=previous_minute, price=9.0),
        tick(1, ts=at[1], price=99.0),  # a resend: the first version stays
    ])  # fmt: skip
    params = {"symbol": "AAPL", "interval": "1m", "start": iso(minute - timedelta(minutes=1))}
    previous, current = client.get("/candles", params=params).json()["candles"]
    assert previous["bucket_start"] == iso(minute - timedelta(minutes=1))
    assert (previous["open"], previous["close"], previous["trade_count"]) == (9.0, 9.0, 1)
    assert previous["is_final"] is False  # closed, but its trade is not materialized yet
    assert (current["open"], current["high"], current["low"], current["close"]) == (8, 12, 8, 11)
    assert (current["volume"], current["trade_count"], current["is_final"]) == (400, 4, False)

    drain_inbox(db)
    after = client.get("/candles", params=params).json()["candles"]
    assert after == [{**previous, "is_final": True}, current]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPE"}, 404),
        ({"symbol": "AAPL", "interval": "2m"}, 422),
        ({"symbol": "AAPL", "start": "2026-11-21T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, 422),
        ({"symbol": "AAPL", "start": "2026-11-20T00:00:00"}, 422),
        ({"symbol": "AAPL", "limit": 0}, 422),
        ({"symbol": "AAPL", "limit": 10_001}, 422),
        ({"symbol": "AAPL", "page_token": "yesterday"}, 422),
        ({"symbol": "AAPL", "page_token": "2026-11-20T00:00:00"}, 422),  # no zone offset
        ({"symbol": "AAPL", "end": "9999-12-31T23:00:00-05:00"}, 422),  # beyond 9999 in UTC
        ({}, 422),
    ],
)
def test_bad_candle_requests_get_a_clear_4xx(
    client: httpx.Client, params: dict[str, Any], code: int
) -> None:
    response = client.get("/candles", params=params)
    assert response.status_code == code
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"end": "0001-01-01T00:30:00Z"},  # a day before it is before the year 1
        {"end": "0001-01-01T00:00:19Z", "interval": "1d"},  # its cache block: before the year 1
        {"start": "9999-12-31T00:00:00Z", "end": "9999-12-31T23:59:59Z"},
        {"page_token": "9999-12-31T23:59:00Z"},
    ],
)
def test_times_at_the_ends_of_the_calendar_are_empty_answers(
    client: httpx.Client, params: dict[str, str]
) -> None:
    response = client.get("/candles", params={"symbol": "AAPL", **params})
    assert response.status_code == 200
    assert response.json()["candles"] == []


def test_history_before_a_time_beyond_the_calendar_in_utc_is_a_422(client: httpx.Client) -> None:
    before = "9999-12-31T23:00:00-05:00"
    response = client.get("/tickers/AAPL/history", params={"before": before})
    assert response.status_code == 422
    assert "before" in response.json()["detail"]


def test_an_empty_range_is_an_empty_list(client: httpx.Client, db: Connection) -> None:
    at = "2026-11-20T10:00:00Z"
    body = client.get("/candles", params={"symbol": "AAPL", "start": at, "end": at}).json()
    assert body == {"symbol": "AAPL", "interval": "1m", "candles": [], "next_page_token": None}


def test_a_resend_moved_in_time_counts_nowhere_before_or_after_promotion(
    client: httpx.Client, db: Connection
) -> None:
    """Promotion keeps the first accepted copy of an identity; reads of pending trades must keep
    the same one, even when a later copy claims another minute (and a higher price)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first, moved = now - timedelta(minutes=3), now - timedelta(minutes=1)
    send(client, [tick(1, ts=iso(first), price=100.0, volume=5)])
    send(client, [tick(1, ts=iso(moved), price=999.0, volume=7)])  # a resend, another minute

    def answers() -> tuple[Any, ...]:
        candles = all_candles(
            client, symbol="AAPL", interval="1m", start=iso(now - timedelta(minutes=5)),
            end=iso(now + timedelta(minutes=1)),
        )  # fmt: skip
        moved_minute = client.get(
            "/candles/trades",
            params={"symbol": "AAPL", "interval": "1m", "bucket_start": iso(moved)},
        ).json()["trades"]
        last = client.get("/tickers/AAPL").json()["last_trade"]
        return (
            [(c["bucket_start"], c["high"], c["volume"]) for c in candles],
            moved_minute,
            (last["price"], last["volume"]),
        )

    expected: tuple[Any, ...] = ([(iso(first), 100.0, 5.0)], [], (100.0, 5.0))
    assert answers() == expected  # both copies pending
    drain_inbox(db)
    assert answers() == expected  # promoted: the first copy stands
