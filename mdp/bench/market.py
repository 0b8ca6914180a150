"""A market for the benchmarks that need one: MARKET_SYMBOLS registered symbols with a year of
history (trades, and their candles computed as a backfill does), ticks drawn by a Zipf law, and
reads of random symbols and ranges, as a screen of analysts would ask."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from core.db import connect
from pipelines.candles import recompute_day

MARKET_SYMBOLS = 2000
ZIPF = 1.0  # the k-th most traded symbol is 1/k as popular as the first
# A symbol's history: a trade every `every` over the last `span`, so that each read of the mix
# finds a full range (a year of days, a month of hours, three days of 5m, a day of 1m).
HISTORY = (
    (timedelta(days=1), timedelta(minutes=1)),
    (timedelta(days=3), timedelta(minutes=5)),
    (timedelta(days=31), timedelta(hours=1)),
    (timedelta(days=366), timedelta(days=1)),
)

SEED_HISTORY = """
INSERT INTO trades (source, event_id, seq, symbol, ts, price, volume, received_at, batch_id)
SELECT 'SEED', s || '-' || n, -n, s, t, 100 + 10 * random(), 1 + floor(random() * 100), now(), 0
FROM (
    SELECT s, t, row_number() OVER (ORDER BY t, s) AS n  -- in time order: the BRIN index works
    FROM unnest(%(symbols)s::text[]) s,
         LATERAL (SELECT DISTINCT date_bin(h.every, %(now)s - g * h.every, 'epoch') AS t
                  FROM unnest(%(spans)s::interval[], %(everies)s::interval[]) AS h(span, every),
                       generate_series(1, (extract(epoch FROM h.span)
                                           / extract(epoch FROM h.every))::int) g) times
) history
ORDER BY n
"""

# Reads of the mix: a day of 1m, three days of 5m, a month of 1h, a year of 1d, the ticker, and
# two days of Polygon 5-minute bars.
READ_KINDS = (
    "candles_1m_day",
    "candles_5m_3days",
    "candles_1h_month",
    "candles_1d_year",
    "tickers",
    "aggs_5minute_2days",
)


def market_symbols() -> list[str]:
    return [f"MKT{i:04d}" for i in range(MARKET_SYMBOLS)]


def random_read(rng: random.Random, symbols: list[str], now: datetime) -> tuple[str, str]:
    """A read of the mix for a random symbol: its kind and path."""
    symbol = rng.choice(symbols)
    kind = rng.choice(READ_KINDS)
    if kind == "tickers":
        return kind, f"/tickers/{symbol}"
    if kind == "aggs_5minute_2days":
        first, last = (now - timedelta(days=1)).date(), now.date()
        return kind, f"/v2/aggs/ticker/{symbol}/range/5/minute/{first}/{last}?limit=50000"
    interval, span = {
        "candles_1m_day": ("1m", timedelta(days=1)),
        "candles_5m_3days": ("5m", timedelta(days=3)),
        "candles_1h_month": ("1h", timedelta(days=31)),
        "candles_1d_year": ("1d", timedelta(days=366)),
    }[kind]
    return kind, candles_path(symbol, interval, now, span)


def candles_path(symbol: str, interval: str, now: datetime, span: timedelta) -> str:
    end = now + timedelta(minutes=1)
    window = f"start={end - span:%Y-%m-%dT%H:%M:00Z}&end={end:%Y-%m-%dT%H:%M:00Z}"
    return f"/candles?symbol={symbol}&interval={interval}&limit=10000&{window}"


def zipf_draws(symbols: list[str], seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / (k + 1) ** ZIPF for k in range(len(symbols))))
    while True:
        yield from rng.choices(symbols, cum_weights=weights, k=256)


def follow_sets(
    market: list[str], count: int, draws: int, *, whole: bool = False
) -> list[frozenset[str]]:
    """`count` distinct sets of symbols to follow, each of `draws` draws by the Zipf law (a crowd
    watches what trades): fewer symbols when draws agree, unless `whole` leaves such sets out."""
    drawn = zipf_draws(market, seed=7)
    sets: dict[frozenset[str], None] = {}
    while len(sets) < count:
        chosen = frozenset(itertools.islice(drawn, draws))
        if len(chosen) == draws or not whole:
            sets[chosen] = None
    return list(sets)


def seed_history(url: str, symbols: list[str]) -> None:
    """Register `symbols` and give each the trades of HISTORY, with their candles recomputed
    day by day as the platform's backfill does; the tables vacuumed and analyzed."""
    now = datetime.now(UTC)
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO symbols (symbol) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            [symbols],
        )
        conn.execute(
            SEED_HISTORY,
            {
                "symbols": symbols,
                "now": now,
                "spans": [span for span, _ in HISTORY],
                "everies": [every for _, every in HISTORY],
            },
        )
        conn.commit()
    with connect(url, autocommit=True) as conn:  # each day commits on its own
        conn.execute("ANALYZE trades")
        first = now - max(span for span, _ in HISTORY) - timedelta(days=1)
        for offset in range((now - first).days + 2):
            recompute_day(conn, url, first.date() + timedelta(days=offset))
        # Settled, as a database is some minutes after a load: statistics and visibility maps
        # made now, not by an autovacuum in the middle of a measure.
        conn.execute("VACUUM (ANALYZE) trades, candles")
