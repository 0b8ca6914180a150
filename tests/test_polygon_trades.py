"""Polygon/Massive's trade history (`list_trades`, GET /v3/trades/{ticker}) through the official
`massive` client: every acknowledged trade that stands (promoted or still pending, resends and
cancelled trades left out), in time then acceptance order, page after page through next_url,
filtered by timestamp as Polygon filters; equal to a computation from the ticks sent."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from massive import RESTClient
from massive.exceptions import BadResponse

from core.db import Connection
from core.intervals import EPOCH
from pipelines.ingestion import drain_inbox
from tests.support import send, tick

DAY = date(2026, 11, 19)


@pytest.fixture
def massive(api_url: str) -> RESTClient:
    return RESTClient(api_key="any-key", base=api_url, retries=0)


def nanos(ts: str) -> int:
    return (datetime.fromisoformat(ts) - EPOCH) // timedelta(microseconds=1) * 1000


def ticks_of_two_days() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Trades over two days, some at the very same time (acceptance breaks the tie), some with
    sale conditions, one of another symbol; then ticks that stay pending: new trades and resends
    of promoted and pending ones at other prices (the first accepted copy stands)."""
    promoted = []
    for i in range(120):
        clock = f"{(i * 7) % 24:02}:{(i * 13) % 60:02}:{i % 3:02}.{i * 4099 % 1000000:06}"
        ts = f"{DAY + timedelta(days=i % 2)}T{clock}+00:00"
        conditions = {"conditions": [37]} if i % 5 == 0 else {}
        promoted.append(tick(i, ts=ts, price=100.0 + i % 17, volume=1 + i % 9, **conditions))
    for i in range(120, 126):  # six trades at the same microsecond
        promoted.append(tick(i, ts=f"{DAY}T12:00:00.000001+00:00", price=90.0 + i))
    promoted.append(tick(126, symbol="MSFT", ts=f"{DAY}T12:00:00+00:00"))
    pending = [
        tick(200 + i, ts=f"{DAY + timedelta(days=i % 2)}T{(i * 5) % 24:02}:30:00+00:00",
             price=80.0 + i, volume=2)
        for i in range(20)
    ]  # fmt: skip
    pending += [
        {**tick(3), "price": 1.0},  # a resend of a promoted trade
        {**tick(205), "price": 2.0},  # a resend of a pending one
        {**tick(210), "ts": f"{DAY + timedelta(days=1)}T02:30:00+00:00"},  # another day's time
    ]
    return promoted, pending


@pytest.fixture
def two_days(client: httpx.Client, db: Connection) -> list[dict[str, Any]]:
    """Sends the trades, promotes the first part, cancels a promoted and a pending trade; the
    AAPL trades that stand, in the order Polygon lists them ascending, with their `seq`."""
    promoted, pending = ticks_of_two_days()
    send(client, promoted)
    drain_inbox(db)
    send(client, pending)
    cancelled = [{"source": "XNAS", "event_id": f"e-{n}"} for n in (10, 207)]
    assert client.post("/ingest/cancels", json={"trades": cancelled}).status_code == 200
    seq: dict[str, int] = dict(
        db.execute(
            "SELECT event_id, min(seq) FROM (SELECT event_id, seq FROM trades"
            " UNION ALL SELECT event_id, seq FROM trade_inbox) a GROUP BY event_id"
        ).fetchall()
    )
    first: dict[str, dict[str, Any]] = {}
    for t in [*promoted, *pending]:
        first.setdefault(t["event_id"], t)
    standing = [
        {**t, "seq": seq[t["event_id"]]}
        for t in first.values()
        if t["symbol"] == "AAPL" and t["event_id"] not in ("e-10", "e-207")
    ]
    return sorted(standing, key=lambda t: (nanos(t["ts"]), t["seq"]))


def as_polygon(trades: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (t["event_id"], nanos(t["ts"]), nanos(t["ts"]), t["price"], t["volume"], t["seq"],
         t.get("conditions"), None)
        for t in trades
    ]  # fmt: skip


def listed(trades: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (t.id, t.participant_timestamp, t.sip_timestamp, t.price, t.size, t.sequence_number,
         t.conditions, t.exchange)
        for t in trades
    ]  # fmt: skip


def test_every_standing_trade_is_listed_in_order_through_next_url(
    massive: RESTClient, two_days: list[dict[str, Any]]
) -> None:
    ascending = list(massive.list_trades("AAPL", order="asc", limit=7))
    assert listed(ascending) == as_polygon(two_days)
    assert any(t.conditions == [37] for t in ascending)
    # Polygon's default is newest first, 1,000 a page.
    assert listed(massive.list_trades("AAPL")) == list(reversed(as_polygon(two_days)))
    newest_first = list(massive.list_trades("AAPL", order="desc", sort="timestamp", limit=5))
    assert listed(newest_first) == list(reversed(as_polygon(two_days)))


def test_a_page_ends_without_next_url_and_holds_at_most_limit(
    api_url: str, two_days: list[dict[str, Any]]
) -> None:
    with httpx.Client(base_url=api_url, timeout=10) as http:
        first = http.get("/v3/trades/AAPL", params={"limit": 10, "order": "asc"}).json()
        assert first["status"] == "OK" and len(first["results"]) == 10
        seen = [r["id"] for r in first["results"]]
        following = first["next_url"]
        while following:
            page = http.get(following).json()
            seen += [r["id"] for r in page["results"]]
            following = page.get("next_url")
        assert seen == [t["event_id"] for t in two_days]
        assert "exchange" not in first["results"][0]


def test_trades_promoted_between_pages_are_neither_lost_nor_repeated(
    massive: RESTClient, db: Connection, two_days: list[dict[str, Any]]
) -> None:
    pages = massive.list_trades("AAPL", order="asc", limit=6)
    head = [next(pages) for _ in range(9)]
    drain_inbox(db)  # the pending trades move to `trades` while the reader pages
    assert listed([*head, *pages]) == as_polygon(two_days)


def none(_: int) -> bool:
    """No trade is at a time that is not a whole microsecond."""
    return False


@pytest.mark.parametrize(
    ("filters", "within"),
    [
        ({"timestamp": DAY}, lambda n: n < nanos(f"{DAY + timedelta(days=1)}T00:00:00+00:00")),
        ({"timestamp": "2026-11-20"}, lambda n: n >= nanos("2026-11-20T00:00:00+00:00")),
        ({"timestamp_gt": "2026-11-19"}, lambda n: n >= nanos("2026-11-20T00:00:00+00:00")),
        ({"timestamp_lte": "2026-11-19"}, lambda n: n < nanos("2026-11-20T00:00:00+00:00")),
        ({"timestamp_lt": "2026-11-20"}, lambda n: n < nanos("2026-11-20T00:00:00+00:00")),
        (
            {"timestamp_gte": "2026-11-19T06:00:00Z", "timestamp_lt": "2026-11-20T01:00:00-05:00"},
            lambda n: nanos("2026-11-19T06:00:00+00:00") <= n < nanos("2026-11-20T06:00:00+00:00"),
        ),
        (  # the client sends datetimes as Unix nanoseconds
            {"timestamp_gte": datetime(2026, 11, 19, 12, tzinfo=UTC),
             "timestamp_lte": datetime(2026, 11, 19, 12, 0, 0, 500, tzinfo=UTC)},
            lambda n: nanos("2026-11-19T12:00:00+00:00") <= n
            <= nanos("2026-11-19T12:00:00.000500+00:00"),
        ),
        (  # one nanosecond past a microsecond: strictly after it
            {"timestamp_gt": str(nanos("2026-11-19T12:00:00.000001+00:00") - 1)},
            lambda n: n >= nanos("2026-11-19T12:00:00.000001+00:00"),
        ),
        (  # an exact time: the trades at that microsecond
            {"timestamp": str(nanos("2026-11-19T12:00:00.000001+00:00"))},
            lambda n: n == nanos("2026-11-19T12:00:00.000001+00:00"),
        ),
        ({"timestamp": str(nanos("2026-11-19T12:00:00.000001+00:00") + 1)}, none),
    ],
)  # fmt: skip
def test_timestamp_filters_take_dates_nanoseconds_and_rfc3339(
    massive: RESTClient, two_days: list[dict[str, Any]], filters: dict[str, Any], within: Any
) -> None:
    expected = [t for t in as_polygon(two_days) if within(t[1])]
    assert expected or within is none  # every filter but one keeps some trades
    assert listed(massive.list_trades("AAPL", order="asc", limit=11, **filters)) == expected


def test_an_unknown_ticker_lists_nothing(massive: RESTClient, db: Connection) -> None:
    assert list(massive.list_trades("NOPE")) == []


@pytest.mark.parametrize(
    "params",
    [{"limit": 50_001}, {"limit": 0}, {"order": "up"}, {"sort": "price"},
     {"timestamp": "yesterday"}, {"timestamp.gte": "2026-11-19T12:00:00"}, {"cursor": "x"}],
)  # fmt: skip
def test_bad_parameters_are_refused_in_polygons_error_shape(
    api_url: str, massive: RESTClient, params: dict[str, Any]
) -> None:
    answer = httpx.get(f"{api_url}/v3/trades/AAPL", params=params)
    assert answer.status_code == 400
    body = answer.json()
    assert body["status"] == "ERROR" and body["request_id"] and body["error"]
    with pytest.raises(BadResponse):
        list(massive.list_trades("AAPL", params=params))


def test_the_largest_page_is_fifty_thousand(api_url: str, db: Connection) -> None:
    answer = httpx.get(f"{api_url}/v3/trades/AAPL", params={"limit": 50_000})
    assert answer.status_code == 200 and answer.json()["results"] == []
