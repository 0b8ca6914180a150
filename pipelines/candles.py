"""OHLCV candles (docs/design.md §5) computed with Polars: 1m candles from canonical trades, coarser
intervals rolled up from 1m, read from and written to the `candles` table. No Dagster here: the
candle assets and the ingestion micro-batch call these, and tests call them directly.

Inside the computation timestamps are integer microseconds since the epoch (UTC): sorting and
grouping on integers is several times faster than on zone-aware datetimes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

import adbc_driver_postgresql.dbapi as adbc
import polars as pl
from psycopg import sql

from core.db import LOCK_CANDLES, Connection, libpq_url, market_zone, query
from core.intervals import INTERVALS, day_window, days_are_utc

ROLLUP_INTERVALS = ("5m", "15m", "1h", "1d")


CANDLE_COLUMNS = (
    "symbol",
    "bucket_start",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trade_count",
    "open_at",
    "close_at",
)
# Inside the computation every timestamp is epoch microseconds (UTC).
TRADE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "ts": pl.Int64(),
        "seq": pl.Int64(),
        "price": pl.Float64(),
        "volume": pl.Float64(),
        "updates_high_low": pl.Boolean(),
        "updates_open_close": pl.Boolean(),
        "updates_volume": pl.Boolean(),
    }
)
ARROW_READ_SCHEMA = pl.Schema(
    {**{k: v for k, v in TRADE_SCHEMA.items() if not k.startswith("updates_")},
     "ts": pl.Datetime("us", "UTC"), "rules": pl.Int16()}
)  # fmt: skip
CANDLE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "bucket_start": pl.Int64(),
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),
        "vwap": pl.Float64(),
        "trade_count": pl.Int64(),
        "open_at": pl.Int64(),
        "close_at": pl.Int64(),
    }
)


UTC_CSV_TIME = "%Y-%m-%d %H:%M:%S%.6f+00"  # naive UTC datetimes as PostgreSQL reads them


def width_us(interval: str) -> int:
    return INTERVALS[interval] // timedelta(microseconds=1)


def bucket_of(epoch_us: pl.Expr, interval: str, zone: tzinfo = UTC) -> pl.Expr:
    """The start (epoch µs) of the `interval` bucket of each time: aligned to the epoch, but for
    1d the market day's midnight in `zone`."""
    if interval != "1d" or days_are_utc(zone):  # integer arithmetic is the fast path
        return epoch_us // width_us(interval) * width_us(interval)
    local = (
        pl.from_epoch(epoch_us, "us").dt.replace_time_zone("UTC").dt.convert_time_zone(str(zone))
    )
    return local.dt.truncate("1d").dt.epoch("us")


def _roll_up(parts: pl.LazyFrame, bucket: pl.Expr, ties: list[str]) -> pl.DataFrame:
    """Merge candle-shaped rows (a trade is a candle of one trade) into the buckets `bucket`
    names; open and close are those of the parts with the earliest `open_at` and the latest
    `close_at` (equal times in `ties` order), and each field leaves out the parts without it
    (docs/design.md §5)."""
    # A part without an open has no open_at (nor a close without close_at): sorted last for the
    # open and first for the close, it is never picked while a part that has one exists. That
    # keeps each pick one ordered pass over the group; dropping the nulls first copied every
    # group and cost as much as the rest of the aggregation.
    return (
        parts.group_by("symbol", bucket.alias("bucket"))
        .agg(
            open=pl.col("open").sort_by("open_at", *ties, nulls_last=True).first(),
            high=pl.col("high").max(),
            low=pl.col("low").min(),
            close=pl.col("close").sort_by("close_at", *ties, nulls_last=False).last(),
            volume=pl.col("volume").sum(),
            notional=pl.col("notional").sum(),
            trade_count=pl.col("trade_count").sum(),
            open_at=pl.col("open_at").min(),
            close_at=pl.col("close_at").max(),
        )
        .with_columns(
            vwap=pl.when(pl.col("trade_count") > 0).then(pl.col("notional") / pl.col("volume"))
        )
        .rename({"bucket": "bucket_start"})
        .select(CANDLE_COLUMNS)
        .sort("symbol", "bucket_start")
        .collect()
    )


def candles_from_trades(trades: pl.DataFrame) -> pl.DataFrame:
    """1m candles from trades (symbol, ts, seq, price, volume and the three update rules their
    sale conditions give); equal timestamps are ordered by `seq`, the acceptance order."""
    price, volume = pl.col("price"), pl.col("volume")
    high_low, open_close, counted = (
        pl.col("updates_high_low"),
        pl.col("updates_open_close"),
        pl.col("updates_volume"),
    )
    parts = (
        trades.lazy()
        .filter(high_low | open_close | counted)
        .select(
            "symbol",
            "ts",
            "seq",
            open=pl.when(open_close).then(price),
            high=pl.when(high_low).then(price),
            low=pl.when(high_low).then(price),
            close=pl.when(open_close).then(price),
            volume=pl.when(counted).then(volume).otherwise(0.0),
            notional=pl.when(counted).then(price * volume).otherwise(0.0),
            trade_count=counted.cast(pl.Int64),
            open_at=pl.when(open_close).then(pl.col("ts")),
            close_at=pl.when(open_close).then(pl.col("ts")),
        )
    )
    return _roll_up(parts, bucket_of(pl.col("ts"), "1m"), ["seq"])


def roll_up(minute_candles: pl.DataFrame, interval: str, zone: tzinfo = UTC) -> pl.DataFrame:
    """Candles of a coarser `interval` from 1m candles; a 1d candle is a market day in `zone`."""
    parts = minute_candles.lazy().with_columns(
        notional=(pl.col("vwap") * pl.col("volume")).fill_null(0.0)
    )
    # Minute candles of a symbol never share an open_at or a close_at: no ties to order.
    return _roll_up(parts, bucket_of(pl.col("bucket_start"), interval, zone), [])


# --- PostgreSQL --------------------------------------------------------------------------------


def lock_candles(conn: Connection) -> None:
    conn.execute(LOCK_CANDLES)


def announce(
    conn: Connection, symbols: list[str], intervals: list[str], bucket_starts: list[datetime]
) -> None:
    """Log that these candles changed, for /stream readers, inside the caller's locked
    transaction; the readers wake at commit."""
    params = {"symbol": symbols, "interval": intervals, "bucket_start": bucket_starts}
    conn.execute(query("announce_candles"), params)


def read_arrow(
    url: str, statement: sql.Composable, schema: pl.Schema | None = None
) -> pl.DataFrame:
    """Rows read as Arrow over binary COPY (ADBC). Values go in as psycopg-quoted literals (see
    `sql.Literal`): ADBC falls back from COPY to a much slower path for bound parameters."""
    with adbc.connect(libpq_url(url)) as conn:
        return pl.read_database(statement.as_string(), conn, schema_overrides=schema)


def read_day_trades(url: str, day: date, zone: tzinfo = UTC) -> pl.DataFrame:
    """One market day of trades, cancelled ones left out. The three update rules travel as the
    bits of one small integer: three boolean columns made the day's read a quarter slower (ADBC
    converts booleans row by row), one int2 costs a tenth of that. Most trades may update every
    field: they get the constant 7 without the arithmetic, which was a fifth of the server's work
    for the read."""
    start, end = day_window(day, zone)
    text = sql.SQL(
        "SELECT symbol, ts, seq, price, volume,"
        " CASE WHEN updates_high_low AND updates_open_close AND updates_volume THEN 7"
        " ELSE updates_high_low::int + 2 * updates_open_close::int + 4 * updates_volume::int"
        " END::int2 AS rules"
        " FROM trades WHERE ts >= {} AND ts < {} AND cancelled_at IS NULL"
    ).format(sql.Literal(start), sql.Literal(end))
    frame = read_arrow(url, text, ARROW_READ_SCHEMA)
    rules = pl.col("rules")
    return frame.select(
        "symbol",
        pl.col("ts").dt.epoch("us"),
        "seq",
        "price",
        "volume",
        updates_high_low=(rules & 1) > 0,
        updates_open_close=(rules & 2) > 0,
        updates_volume=(rules & 4) > 0,
    )


def insert_candles(conn: Connection, candles: dict[str, pl.DataFrame]) -> int:
    """COPY the candles of each interval into `candles`, in one statement (their buckets must be
    free: the caller deleted them in the same transaction); returns the rows written."""
    if not candles:
        return 0
    times = ("bucket_start", "open_at", "close_at")
    rows = pl.concat(
        frame.select(
            "symbol",
            pl.lit(interval).alias("interval"),
            *(pl.from_epoch(c, "us") if c in times else pl.col(c) for c in CANDLE_COLUMNS[1:]),
        )
        for interval, frame in candles.items()
    )
    if rows.is_empty():
        return 0
    columns = ", ".join(f'"{c}"' for c in rows.columns)
    with conn.cursor().copy(f"COPY candles ({columns}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(rows.write_csv(include_header=False, datetime_format=UTC_CSV_TIME))
    return rows.height


# --- what the assets and the micro-batch do ----------------------------------------------------


@dataclass(frozen=True)
class DayCandles:
    """The outcome of recomputing one day of one interval, reported as asset metadata."""

    day: date
    interval: str
    candles: int
    trades: int
    first_bucket: datetime | None
    last_bucket: datetime | None


def recompute_day(
    conn: Connection, url: str, day: date, intervals: Sequence[str] = tuple(INTERVALS)
) -> list[DayCandles]:
    """Replace one market day of candles in `intervals` (the day in the zone the database holds,
    docs/design.md §5), atomically: 1m from the day's trades, the coarser intervals rolled up from
    those in memory; the change log records the day as replaced."""
    with conn.transaction():
        lock_candles(conn)  # from here on no micro-batch commits, so the read below is complete
        zone = market_zone(conn)
        start, end = day_window(day, zone)
        minute = candles_from_trades(read_day_trades(url, day, zone))
        candles = {i: minute if i == "1m" else roll_up(minute, i, zone) for i in intervals}
        conn.execute(  # one statement for every interval: the change triggers fire once
            'DELETE FROM candles WHERE "interval" = ANY(%s)'
            " AND bucket_start >= %s AND bucket_start < %s",
            (list(intervals), start, end),
        )
        insert_candles(conn, candles)
        outcomes = [_outcome(day, interval, frame) for interval, frame in candles.items()]
        conn.execute(
            'INSERT INTO candle_updates (symbol, "interval", bucket_start, whole_day)'
            " SELECT '*', i, %s, true FROM unnest(%s::text[]) i",
            (start, list(intervals)),
        )
    return outcomes


def _outcome(day: date, interval: str, candles: pl.DataFrame) -> DayCandles:
    bounds = candles["bucket_start"]
    return DayCandles(
        day=day,
        interval=interval,
        candles=candles.height,
        trades=int(candles["trade_count"].sum()),
        first_bucket=_datetime(bounds.min()) if candles.height else None,
        last_bucket=_datetime(bounds.max()) if candles.height else None,
    )


def _datetime(epoch_us: object) -> datetime:
    assert isinstance(epoch_us, int)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=epoch_us)
