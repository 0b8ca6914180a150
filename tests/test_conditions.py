"""Sale conditions and cancels: every candle, on every path (live reads of pending trades, the
micro-batch merge, a cancel's restatement, the Polars day recomputation, the SQL reference,
Polygon bars, an import), equals a plain Python computation under the published consolidated
rules over the trades not cancelled; unknown codes are refused."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from massive import RESTClient

from core.db import Connection, query
from core.intervals import INTERVALS
from mdp.reconcile import candle_differences, close_enough
from pipelines.candles import recompute_day
from pipelines.ingestion import promote_batch
from tests.support import tick
from tests.test_stream import events, take

# The consolidated rules as Polygon/Massive publish them for the codes used here: (updates
# high/low, open/close, volume). Written out, not read from the platform's table.
PUBLISHED = {
    2: (False, False, True),  # Average Price Trade
    10: (True, False, True),  # Derivatively Priced
    12: (False, False, True),  # Form T/Extended Hours
    14: (True, True, True),  # Intermarket Sweep
    15: (False, False, False),  # Market Center Official Close
    37: (False, False, True),  # Odd Lot Trade
    38: (True, True, False),  # Corrected Consolidated Close (per listing market)
    41: (True, True, True),  # Trade Thru Exempt
    60: (True, True, True),  # Short Sale Restriction In Effect: a flag, no rules
}
MIXES = [None, None, None, [14], [37], [10], [2], [15], [38], [12], [10, 37], [14, 41], [60, 38]]
START = datetime(2026, 11, 19, 23, 50, tzinfo=UTC)  # trades straddle a UTC midnight
WINDOW = (datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC))


def rules(conditions: list[int] | None) -> tuple[bool, bool, bool]:
    """The most restrictive rule wins, field by field."""
    fields = [PUBLISHED[c] for c in conditions or ()]
    return (
        all(f[0] for f in fields),
        all(f[1] for f in fields),
        all(f[2] for f in fields),
    )


@dataclass(frozen=True)
class Stored:
    symbol: str
    ts: datetime
    seq: int
    price: float
    volume: float
    conditions: list[int] | None
    cancelled_at: datetime | None = None


Bar = tuple[float | None, float | None, float | None, float | None, float, float | None, int]


def rule_bar(trades: list[tuple[float, float, tuple[bool, bool, bool]]]) -> Bar:
    """The bar of these trades, in time order then acceptance, each (price, volume, what it may
    update: high/low, open/close, volume): open/close from the first/last that may set them,
    high/low over those that may, volume, VWAP and count over those that count in volume."""
    ends = [price for price, _, (_, open_close, _) in trades if open_close]
    prices = [price for price, _, (high_low, _, _) in trades if high_low]
    counted = [(price, size) for price, size, (_, _, volume) in trades if volume]
    volume = sum(size for _, size in counted)
    return (
        ends[0] if ends else None,
        max(prices) if prices else None,
        min(prices) if prices else None,
        ends[-1] if ends else None,
        volume,
        sum(price * size for price, size in counted) / volume if counted else None,
        len(counted),
    )


def expected(trades: list[Stored], interval: str) -> dict[tuple[str, datetime], Bar]:
    """Candles by (symbol, bucket start) under the rules (`rule_bar`); a bucket whose trades may
    update nothing has no candle."""
    width = INTERVALS[interval]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    buckets: defaultdict[tuple[str, datetime], list[Stored]] = defaultdict(list)
    for t in sorted(trades, key=lambda t: (t.ts, t.seq)):
        if any(rules(t.conditions)) and t.cancelled_at is None:
            buckets[(t.symbol, epoch + (t.ts - epoch) // width * width)].append(t)
    return {
        key: rule_bar([(t.price, t.volume, rules(t.conditions)) for t in members])
        for key, members in buckets.items()
    }


def same(got: dict[tuple[str, datetime], Bar], want: dict[tuple[str, datetime], Bar]) -> bool:
    return got.keys() == want.keys() and all(
        got[k][:4] == want[k][:4]
        and got[k][6] == want[k][6]
        and math.isclose(got[k][4], want[k][4], rel_tol=1e-12)
        and close_enough(got[k][5], want[k][5])
        for k in got
    )


def stored_trades(db: Connection) -> list[Stored]:
    rows = db.execute(
        "SELECT symbol, ts, seq, price, volume, conditions, cancelled_at FROM trades"
        " UNION ALL SELECT symbol, ts, seq, price, volume, conditions, cancelled_at"
        " FROM trade_inbox i WHERE NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source"
        " AND t.event_id = i.event_id)"
    ).fetchall()
    return [Stored(*row) for row in rows]


def stored_candles(db: Connection, interval: str) -> dict[tuple[str, datetime], Bar]:
    rows = db.execute(
        "SELECT symbol, bucket_start, open, high, low, close, volume, vwap, trade_count"
        ' FROM candles WHERE "interval" = %s',
        (interval,),
    ).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def served_candles(client: httpx.Client, interval: str) -> dict[tuple[str, datetime], Bar]:
    bars: dict[tuple[str, datetime], Bar] = {}
    for symbol in ("AAPL", "MSFT"):
        params = {"symbol": symbol, "interval": interval, "limit": 10_000}
        params |= {"start": WINDOW[0].isoformat(), "end": WINDOW[1].isoformat()}
        page = client.get("/candles", params=params).json()
        for c in page["candles"]:
            start = datetime.fromisoformat(c["bucket_start"])
            bars[(symbol, start)] = tuple(
                c[f] for f in ("open", "high", "low", "close", "volume", "vwap", "trade_count")
            )
    return bars


def explained(client: httpx.Client, symbol: str, interval: str, start: datetime) -> Bar:
    """A candle summed back from `/candles/trades`, read in pages of two, by each trade's
    `counts_in`; the trades must come in time order, then acceptance."""
    listed: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"symbol": symbol, "interval": interval, "bucket_start": start.isoformat()}
        page = client.get("/candles/trades", params=params | {"limit": 2, "page_token": token})
        assert page.status_code == 200, page.text
        listed += page.json()["trades"]
        if not (token := page.json()["next_page_token"]):
            break
    times = [datetime.fromisoformat(t["ts"]) for t in listed]
    assert times == sorted(times)
    for t in listed:
        if t["cancelled_at"]:
            assert t["counts_in"] == []
            continue
        assert t["counts_in"] == [
            f for f, on in zip(("open_close", "high_low", "volume"), _order(t), strict=True) if on
        ]
    return rule_bar([(t["price"], t["volume"], _may_update(t["counts_in"])) for t in listed])


def _may_update(counts_in: list[str]) -> tuple[bool, bool, bool]:
    return "high_low" in counts_in, "open_close" in counts_in, "volume" in counts_in


def _order(listed: dict[str, Any]) -> tuple[bool, bool, bool]:
    high_low, open_close, volume = rules(listed["conditions"])
    return open_close, high_low, volume


def violations(db: Connection) -> list[Any]:
    return [
        row
        for interval in INTERVALS
        for row in db.execute(
            query("candle_violations"),
            {"interval": interval, "start": WINDOW[0], "end": WINDOW[1]},
        ).fetchall()
    ]


trade_strategy = st.tuples(
    st.sampled_from(["AAPL", "MSFT"]),
    st.integers(0, 25 * 60),  # seconds after START: a few minutes, two UTC days
    st.sampled_from([10.0, 10.5, 11.0, 9.5, 12.25]),
    st.integers(1, 500),
    st.sampled_from(MIXES),
)


# Examples on the real server and database: slow, and sharing the session's fixtures.
ON_THE_DATABASE = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CUTS = st.lists(st.booleans(), min_size=40, max_size=40)


def send_in_random_batches(
    client: httpx.Client, db: Connection, ticks: list[dict[str, Any]], cuts: list[bool]
) -> None:
    """POST `ticks` in batches that end where `cuts` says, with a micro-batch after those that
    `cuts` read backwards says."""
    batch: list[dict[str, Any]] = []
    for n, one in enumerate(ticks):
        batch.append(one)
        if cuts[n] or n == len(ticks) - 1:
            assert client.post("/ingest/ticks", json=batch).status_code == 202
            batch = []
            if cuts[-1 - n]:
                promote_batch(db)


@settings(ON_THE_DATABASE, max_examples=30)
@given(
    trades=st.lists(trade_strategy, min_size=1, max_size=40),
    cuts=CUTS,
    cancels=st.lists(st.integers(0, 45), max_size=8),
)
def test_every_path_follows_the_rules(
    client: httpx.Client,
    db: Connection,
    database_url: str,
    trades: list[tuple[str, int, float, int, list[int] | None]],
    cuts: list[bool],
    cancels: list[int],
) -> None:
    """Random condition mixes, equal prices and times, sent in random batches with micro-batches
    between some, then random cancels (of promoted and pending trades, twice, unknown ones):
    live reads (pending trades merged), then the micro-batch merge, then the day recomputation,
    each equal to the rules computed here, for every interval."""
    db.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches")
    ticks = [
        tick(n, symbol=symbol, ts=(START + timedelta(seconds=second)).isoformat(), price=price,
             volume=volume) | ({"conditions": conditions} if conditions else {})
        for n, (symbol, second, price, volume, conditions) in enumerate(trades)
    ]  # fmt: skip
    send_in_random_batches(client, db, ticks, cuts)
    if cancels:
        asked = [{"source": "XNAS", "event_id": f"e-{n}"} for n in cancels]
        answer = client.post("/ingest/cancels", json={"trades": asked})
        assert answer.status_code == 200, answer.text
        outcomes = [r["outcome"] for r in answer.json()["results"]]
        seen: set[int] = set()
        for n, outcome in zip(cancels, outcomes, strict=True):
            wanted = (
                "unknown" if n >= len(trades) else "already_cancelled" if n in seen else "cancelled"
            )
            assert outcome == wanted
            seen.add(n)
    every = stored_trades(db)
    assert len(every) == len(trades)
    cancelled = {n for n in cancels if n < len(trades)}
    assert sum(t.cancelled_at is not None for t in every) == len(cancelled)
    for interval in INTERVALS:
        assert same(served_candles(client, interval), expected(every, interval)), interval
    hours = served_candles(client, "1h")  # every bar explained by its trades, pending or not
    assert same({k: explained(client, *k[:1], "1h", k[1]) for k in hours}, hours)

    while promote_batch(db).inbox_rows:
        pass
    for interval in INTERVALS:
        assert same(stored_candles(db, interval), expected(every, interval)), interval
    assert candle_differences(db) == []  # the SQL reference agrees
    assert violations(db) == []

    for day in {t.ts.date() for t in every}:
        recompute_day(db, database_url, day)
    for interval in INTERVALS:
        assert same(stored_candles(db, interval), expected(every, interval)), interval
    assert violations(db) == []


def test_an_odd_lot_far_from_the_market_never_sets_the_high(
    client: httpx.Client, db: Connection, api_url: str
) -> None:
    at = "2026-11-20T15:00:{:02d}Z"
    ticks = [
        tick(1, ts=at.format(1), price=10.0, volume=100),
        tick(2, ts=at.format(2), price=50.0, volume=5, conditions=[37]),  # odd lot, far away
        tick(3, ts=at.format(3), price=10.2, volume=200, conditions=[14]),
        tick(4, ts=at.format(4), price=9.0, volume=300, conditions=[2]),  # average price
    ]
    assert client.post("/ingest/ticks", json=ticks).status_code == 202
    promote_batch(db)
    [(bar)] = stored_candles(db, "1m").values()
    assert bar[:4] == (10.0, 10.2, 10.0, 10.2)
    assert bar[4] == 605.0 and bar[6] == 4
    assert bar[5] == pytest.approx((1000 + 250 + 2040 + 2700) / 605)
    rest = RESTClient(api_key="any-key", base=api_url, retries=0)
    [agg] = rest.get_aggs("AAPL", 1, "day", "2026-11-20", "2026-11-20")
    assert (agg.open, agg.high, agg.low, agg.close, agg.volume) == (10.0, 10.2, 10.0, 10.2, 605)


def test_a_bucket_of_trades_that_set_no_price_has_volume_and_no_prices(
    client: httpx.Client, db: Connection
) -> None:
    ticks = [
        tick(1, ts="2026-11-20T15:00:01Z", price=10.0, volume=100),
        tick(2, ts="2026-11-20T15:01:01Z", price=11.0, volume=7, conditions=[37]),
        tick(3, ts="2026-11-20T15:02:01Z", price=12.0, volume=9, conditions=[15]),  # nothing
    ]
    assert client.post("/ingest/ticks", json=ticks).status_code == 202
    params = {"symbol": "AAPL", "interval": "1m", "start": "2026-11-20T15:00:00Z"}
    params |= {"end": "2026-11-20T15:05:00Z"}
    for promoted in (False, True):  # pending, then materialized
        if promoted:
            promote_batch(db)
        candles = client.get("/candles", params=params).json()["candles"]
        assert [(c["open"], c["high"], c["volume"], c["vwap"]) for c in candles] == [
            (10.0, 10.0, 100.0, 10.0),
            (None, None, 7.0, 11.0),
        ]
    [day] = stored_candles(db, "1d").values()
    assert day[:4] == (10.0, 10.0, 10.0, 10.0) and (day[4], day[6]) == (107.0, 2)
    assert day[5] == pytest.approx(1077 / 107)


def test_unknown_conditions_are_refused_by_code_and_registered_ones_accepted(
    client: httpx.Client, db: Connection
) -> None:
    refused = client.post("/ingest/tick", json=tick(1, conditions=[37, 9998]))
    assert refused.status_code == 422
    assert "unknown sale condition 9998" in refused.text
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (0,)

    db.execute(
        "INSERT INTO trade_conditions VALUES (9999, 'sale_condition', 'Test', false, false, true)"
    )
    try:
        # The API re-reads its registry on an unknown code, at most every two seconds.
        deadline = time.monotonic() + 30
        while (
            answer := client.post("/ingest/tick", json=tick(2, conditions=[37, 9999]))
        ).status_code == 422:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.5)
        assert answer.status_code == 202, answer.text
        row = db.execute(
            "SELECT conditions, updates_high_low, updates_open_close, updates_volume"
            " FROM trade_inbox"
        ).fetchone()
        assert row == ([37, 9999], False, False, True)
    finally:
        db.execute("DELETE FROM trade_conditions WHERE id = 9999")


def test_the_conditions_list_reads_through_the_official_client(api_url: str) -> None:
    rest = RESTClient(api_key="any-key", base=api_url, retries=0)
    listed = list(rest.list_conditions(asset_class="stocks", data_type="trade", limit=10))
    assert len(listed) == len({c.id for c in listed}) > 40  # pages followed through next_url
    by_id = {c.id: c for c in listed}
    for code, (high_low, open_close, volume) in PUBLISHED.items():
        rules_ = by_id[code].update_rules
        if code == 60:
            assert rules_ is None  # a flag: restricts nothing
            continue
        assert rules_ is not None and rules_.consolidated is not None
        consolidated = rules_.consolidated
        got = (
            consolidated.updates_high_low,
            consolidated.updates_open_close,
            consolidated.updates_volume,
        )
        assert got == (high_low, open_close, volume), code
    assert by_id[37].name == "Odd Lot Trade"
    [one] = rest.list_conditions(id=2)
    assert one.name == "Average Price Trade"
    assert list(rest.list_conditions(asset_class="options")) == []


def test_imported_polygon_conditions_follow_the_rules(
    db: Connection, database_url: str, tmp_path: Path
) -> None:
    """`trades_v1`'s conditions column: stored with each trade, its rules applied by the
    backfill; a file with an unknown code is refused whole, naming the code and the line."""
    from mdp.imports import import_file
    from pipelines.trade_files import RefusedFile

    header = ("ticker,conditions,correction,exchange,id,participant_timestamp,price,"
              "sequence_number,sip_timestamp,size,tape,trf_id,trf_timestamp")  # fmt: skip
    base = (datetime(2026, 11, 20, 15, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // (
        timedelta(microseconds=1)
    )
    lines = [
        f'AAPL,"{c}",,4,{i},0,{p},{i},{(base + i * 1_000_000) * 1000},{v},3,,'
        for i, (c, p, v) in enumerate(
            [("", 10.0, 100), ("37", 99.0, 3), ("14,41", 10.4, 200), ("10", 11.0, 50)]
        )
    ]
    path = tmp_path / "conditions.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    assert import_file(database_url, path, "polygon-trades", None, False).stored == 4
    recompute_day(db, database_url, date(2026, 11, 20))
    for interval in INTERVALS:
        assert same(stored_candles(db, interval), expected(stored_trades(db), interval))
    [bar] = stored_candles(db, "1m").values()
    assert bar[:4] == (10.0, 11.0, 10.0, 10.4)

    bad = tmp_path / "unknown.csv"
    bad.write_text("\n".join([header, lines[0], lines[1].replace('"37"', '"37,4242"')]) + "\n")
    with pytest.raises(RefusedFile, match="line 3: conditions unknown sale condition 4242"):
        import_file(database_url, bad, "polygon-trades", None, False)


def test_the_trades_of_a_bucket_explain_its_candle(client: httpx.Client, db: Connection) -> None:
    at = "2026-11-20T15:00:{:02d}Z"
    ticks = [
        tick(1, ts=at.format(3), price=10.0, volume=100),
        tick(2, ts=at.format(1), price=50.0, volume=5, conditions=[37]),
        tick(3, ts=at.format(3), price=10.2, volume=200, conditions=[10]),
        tick(4, ts="2026-11-20T15:01:00Z", price=9.0, volume=300),  # the next bucket
    ]
    assert client.post("/ingest/ticks", json=ticks[:2]).status_code == 202
    promote_batch(db)
    assert client.post("/ingest/ticks", json=ticks[2:]).status_code == 202  # pending
    params = {"symbol": "AAPL", "interval": "1m", "bucket_start": "2026-11-20T15:00:00Z"}
    page = client.get("/candles/trades", params=params).json()
    assert [(t["event_id"], t["counts_in"]) for t in page["trades"]] == [
        ("e-2", ["volume"]),
        ("e-1", ["open_close", "high_low", "volume"]),
        ("e-3", ["high_low", "volume"]),  # same time as e-1, accepted later
    ]
    assert page["trades"][0]["conditions"] == [37] and page["next_page_token"] is None
    misaligned = client.get(
        "/candles/trades", params=params | {"bucket_start": "2026-11-20T15:00:30Z"}
    )
    assert misaligned.status_code == 422
    unknown = client.get("/candles/trades", params=params | {"symbol": "NOPE"})
    assert unknown.status_code == 404


def test_a_cancel_restates_every_candle_and_reports_each_item(
    api_url: str, client: httpx.Client, db: Connection
) -> None:
    at = "2026-11-20T15:00:{:02d}Z"
    ticks = [
        tick(1, ts=at.format(1), price=10.0, volume=100),
        tick(2, ts=at.format(2), price=12.0, volume=100),  # the high, cancelled below
        tick(3, ts=at.format(3), price=11.0, volume=100),
    ]
    assert client.post("/ingest/ticks", json=ticks).status_code == 202
    promote_batch(db)
    assert client.post("/ingest/tick", json=tick(4, ts=at.format(4), price=9.0)).status_code == 202
    with events(api_url, events="candle", symbols="AAPL") as stream:
        body = {"trades": [{"source": "XNAS", "event_id": e} for e in ("e-2", "e-4", "e-9", "e-2")]}
        answer = client.post("/ingest/cancels", json=body)
        assert answer.status_code == 200, answer.text
        restated = take(stream, 5)
    assert answer.json() == {
        "cancelled": 2,
        "results": [
            {"source": "XNAS", "event_id": "e-2", "outcome": "cancelled"},
            {"source": "XNAS", "event_id": "e-4", "outcome": "cancelled"},  # still pending
            {"source": "XNAS", "event_id": "e-9", "outcome": "unknown"},
            {"source": "XNAS", "event_id": "e-2", "outcome": "already_cancelled"},
        ],
    }
    assert {
        (e["data"]["interval"], e["data"]["high"], e["data"]["revision"]) for e in restated
    } == {(interval, 11.0, 1) for interval in INTERVALS}
    promote_batch(db)
    [bar] = stored_candles(db, "1m").values()
    assert bar[:4] == (10.0, 11.0, 10.0, 11.0) and (bar[4], bar[6]) == (200.0, 2)
    assert db.execute("SELECT count(*) FROM trades WHERE cancelled_at IS NOT NULL").fetchone() == (
        2,
    )
    assert candle_differences(db) == []
    again = client.post("/ingest/cancels", json={"trades": [{"source": "XNAS", "event_id": "e-4"}]})
    assert again.json()["results"][0]["outcome"] == "already_cancelled"
    assert client.post("/ingest/cancels", json={"trades": []}).status_code == 422
    assert httpx.post(f"{api_url}/ingest/cancels", json=body).status_code == 401


def test_cancelling_every_trade_of_a_bucket_removes_its_candles(
    api_url: str, client: httpx.Client, db: Connection
) -> None:
    assert client.post("/ingest/tick", json=tick(1, ts="2026-11-20T15:00:01Z")).status_code == 202
    promote_batch(db)
    with events(api_url, events="candle", symbols="AAPL") as stream:
        body = {"trades": [{"source": "XNAS", "event_id": "e-1"}]}
        assert client.post("/ingest/cancels", json=body).status_code == 200
        gone = take(stream, 5)
    assert {(e["data"]["trade_count"], e["data"]["close"]) for e in gone} == {(0, None)}
    assert db.execute("SELECT count(*) FROM candles").fetchone() == (0,)
    params = {"symbol": "AAPL", "interval": "1m", "bucket_start": "2026-11-20T15:00:00Z"}
    [listed] = client.get("/candles/trades", params=params).json()["trades"]
    assert listed["event_id"] == "e-1" and listed["cancelled_at"] and listed["counts_in"] == []
