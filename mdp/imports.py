"""`mdp import PATH… [--format F] [--symbol S] [--register-symbols] [--no-backfill]`: historical
trades from files into `trades`, a file at a time and atomically (a bad row refuses the whole
file and stores nothing), with the ingest API's identity rule (the first accepted `(source,
event_id)` wins, so importing a file twice changes nothing); then one backfill of the days they
touched (candles of every interval, and the lake).

A file streams through in chunks (memory stays bounded whatever its size): each chunk is
checked, then copied into a staging table; at the end of the file its rows go into `trades`
under the candles lock (in file order when an identity repeats), numbered in file order below
everything accepted before, and the import is recorded as a batch in `ingest_batches`."""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import polars as pl
import psycopg

from core.conditions import SELECT_RULES, ConditionRules, rules_table
from core.config import Settings
from core.db import Connection, connect, prepare
from core.embedded import market_database
from core.intervals import CANDLE_ASSETS, EPOCH, day_spans
from core.ticks import InvalidTicks, MalformedBody, parse_ticks
from mdp.progress import ProgressLine
from pipelines.candles import lock_candles
from pipelines.ingestion import open_batch
from pipelines.names import LAKE
from pipelines.trade_files import (
    CHUNK_BYTES,
    TRADES,
    Chunk,
    RefusedFile,
    RowError,
    binance_symbol,
    guess_format,
    read_binance,
    read_polygon,
)

FORMATS = ("polygon-trades", "binance-trades", "binance-aggtrades", "ticks")
TICK_BATCH = 100_000  # ticks checked at a time
TICK_COLUMNS = [name for name in TRADES.names() if name != "line"]  # an inbox row's fields

STAGE = (
    "CREATE TEMP TABLE import_stage (line int8, symbol text, ts int8, price float8,"
    " volume float8, source text, event_id text, conditions int2[], updates_high_low bool,"
    " updates_open_close bool, updates_volume bool) ON COMMIT DROP"
)
# History is not news: imported trades take `seq` numbers below every other (negative, in file
# order), so stream readers, whose cursors start after the live trades, never see them.
BELOW_EVERY_SEQ = """
SELECT least(coalesce((SELECT min(seq) FROM trades), 0), 0)
       - (SELECT coalesce(max(line), 0) FROM import_stage) - 1
"""
# The staged rows into `trades`, then the symbols' spans; its row: trades stored, market days
# touched (in the zone `market_settings` holds).
_STORED = """
WITH stored AS (
    INSERT INTO trades (source, event_id, seq, symbol, ts, price, volume, received_at, batch_id,
                        conditions, updates_high_low, updates_open_close, updates_volume)
    SELECT source, event_id, %(below)s + line, symbol,
           'epoch'::timestamptz + ts * interval '1 microsecond', price, volume, now(),
           %(batch_id)s, conditions, updates_high_low, updates_open_close, updates_volume
    FROM {staged}
    {on_conflict}
    RETURNING symbol, ts
),
spans AS (
    UPDATE symbols s
    SET first_trade_at = LEAST(s.first_trade_at, t.first), last_trade_at = GREATEST(
        s.last_trade_at, t.last)
    FROM (SELECT symbol, min(ts) AS first, max(ts) AS last FROM stored GROUP BY 1) t
    WHERE s.symbol = t.symbol
)
SELECT count(*),
       coalesce(array_agg(DISTINCT (ts AT TIME ZONE (SELECT timezone FROM market_settings))::date),
                '{{}}')
FROM stored
"""
# New history, the usual import: no identity twice in the file and none known, so the rows go in
# as they are, without a conflict check per row (a third of the cost of storing them). An
# identity seen twice fails it (unique violation), and the file goes in by the rule instead.
STORE_NEW = _STORED.format(staged="import_stage", on_conflict="")
# The identity rule, as promotion has it: rows in file order, so of two with one identity the first
# in the file goes in, and a trade already known wins over both.
STORE_FIRST_WINS = _STORED.format(
    staged="(SELECT * FROM import_stage ORDER BY line) staged",
    on_conflict="ON CONFLICT (source, event_id) DO NOTHING",
)


@dataclass
class Imported:
    path: Path
    rows: int = 0
    stored: int = 0
    days: set[date] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        return self.rows - self.stored


def run_import(
    settings: Settings,
    paths: list[Path],
    *,
    fmt: str | None,
    symbol: str | None,
    register: bool,
    backfill: bool,
) -> int:
    results: list[Imported] = []
    with market_database(settings) as url:
        prepare(url, settings.symbol_list, settings.market_timezone)
        for path in paths:
            try:
                results.append(import_file(url, path, fmt or guess_format(path), symbol, register))
            except (RefusedFile, OSError, UnknownSymbols) as exc:
                print(f"mdp import: refused {exc}", file=sys.stderr)
                return 1
            result = results[-1]
            print(
                f"{path}: {result.rows:,} rows read, {result.stored:,} stored, "
                f"{result.duplicates:,} duplicates, {len(result.days)} day(s), "
                f"{result.seconds:.1f} s ({result.rows / max(result.seconds, 1e-9):,.0f} rows/s)",
                flush=True,
            )
    days = sorted({day for r in results for day in r.days})
    if not days:
        print("nothing new: no day to backfill")
        return 0
    if not backfill:
        print(f"days touched, not backfilled (--no-backfill): {day_ranges(days)}")
        return 0
    from mdp.backfill import run_backfill

    for first, last in day_spans(days):
        status = run_backfill(settings, first, last, [*CANDLE_ASSETS, LAKE])
        if status:
            return status
    return 0


class UnknownSymbols(ValueError):
    pass


def import_file(url: str, path: Path, fmt: str, symbol: str | None, register: bool) -> Imported:
    """One file into `trades`, in one transaction; its figures."""
    if fmt not in FORMATS:
        raise RefusedFile(path, [RowError(0, "format", f"is not one of {', '.join(FORMATS)}")])
    result = Imported(path)
    started = time.monotonic()
    progress = Progress(path)
    with connect(url) as conn, conn.transaction():
        conn.execute(STAGE)
        conditions = rules_table(conn.execute(SELECT_RULES).fetchall())
        symbols: set[str] = set()
        for chunk in _chunks(path, fmt, symbol, conditions):
            _stage(conn, path, chunk.trades)
            symbols.update(chunk.trades["symbol"].unique().to_list())
            result.rows += chunk.trades.height
            progress.show(result.rows, chunk.consumed)
        progress.end()
        _check_symbols(conn, path, symbols, register)
        lock_candles(conn)  # as promotion does: trades and their candles change under it
        # the run id's prefix: an import is no beat (platform_snapshot.sql)
        batch_id = open_batch(conn, f"import:{path.name}", inbox_rows=result.rows)
        [(below,)] = conn.execute(BELOW_EVERY_SEQ).fetchall()
        stored, days = _store(conn, {"batch_id": batch_id, "below": below})
        conn.execute(
            "UPDATE ingest_batches SET promoted = %s, duplicates = %s, finished_at ="
            " clock_timestamp() WHERE batch_id = %s",
            (stored, result.rows - stored, batch_id),
        )
    result.stored, result.days = stored, set(days)
    result.seconds = time.monotonic() - started
    return result


def _store(conn: Connection, params: dict[str, int]) -> tuple[int, list[date]]:
    try:
        with conn.transaction():
            [(stored, days)] = conn.execute(STORE_NEW, params).fetchall()
    except psycopg.errors.UniqueViolation:
        [(stored, days)] = conn.execute(STORE_FIRST_WINS, params).fetchall()
    return stored, days


def _chunks(
    path: Path, fmt: str, symbol: str | None, conditions: ConditionRules
) -> Iterator[Chunk]:
    now_us = (datetime.now(UTC) - EPOCH) // timedelta(microseconds=1)
    if fmt == "polygon-trades":
        yield from read_polygon(path, now_us=now_us, conditions=conditions)
    elif fmt == "ticks":
        yield from _ticks(path, conditions)
    else:
        name = symbol or binance_symbol(path)
        if not name:
            raise RefusedFile(
                path, [RowError(0, "symbol", "unknown: name it with --symbol SYMBOL")]
            )
        aggregated = fmt == "binance-aggtrades"
        yield from read_binance(path, aggregated=aggregated, symbol=name, now_us=now_us)


def _ticks(path: Path, conditions: ConditionRules) -> Iterator[Chunk]:
    """Our tick shape (NDJSON, CSV with a header, or Parquet), checked exactly as the ingest API
    checks a batch; line numbers count from the first tick."""
    if path.suffix == ".parquet":
        batches: Iterator[pl.DataFrame] = iter(
            pl.scan_parquet(path).collect_batches(chunk_size=TICK_BATCH)
        )
    elif path.suffix == ".csv":
        batches = iter(pl.scan_csv(path, infer_schema=False).collect_batches(chunk_size=TICK_BATCH))
    else:
        batches = (
            pl.read_ndjson(io.BytesIO(text), infer_schema_length=None)
            for text in _text_chunks(path)
        )
    line = 1
    for batch in batches:
        records = batch.to_dicts()
        if any(batch.schema.get(c) == pl.String for c in ("price", "conditions")):
            records = [_numbers(r) for r in records]
        try:
            rows = parse_ticks(
                msgspec.json.encode(records),
                batch=True,
                ndjson=False,
                symbols=_EVERY_SYMBOL,
                conditions=conditions,
                now=datetime.now(UTC),
            )
        except InvalidTicks as exc:
            raise RefusedFile(
                path, [RowError(line + e.index, e.field, e.reason) for e in exc.errors]
            ) from None
        except MalformedBody as exc:
            raise RefusedFile(path, [RowError(line, "", str(exc))]) from None
        trades = pl.DataFrame(rows, schema=TICK_COLUMNS, orient="row").with_columns(
            ts=(pl.col("ts") - EPOCH).dt.total_microseconds(),
            line=pl.int_range(line, line + len(rows), dtype=pl.Int64),
        )
        yield Chunk(trades.select(TRADES.names()).cast(TRADES), path.stat().st_size)
        line += len(rows)


def _numbers(record: dict[str, object]) -> dict[str, object]:
    """A CSV row's numbers as numbers (the API refuses numeric strings; a CSV has no others)."""
    out = dict(record)
    for key in ("price", "volume"):
        value = out.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: refused as the API refuses it
                out[key] = float(value)
    ts = out.get("ts")
    if isinstance(ts, str) and ts.lstrip("-").isdigit():
        out["ts"] = int(ts)
    codes = out.get("conditions")
    if isinstance(codes, str):  # "12,37" or "[12, 37]"; empty: a regular trade
        items = [c.strip() for c in codes.strip().strip("[]").split(",") if c.strip()]
        if all(c.isdigit() for c in items):
            out["conditions"] = [int(c) for c in items] or None
    return out


def _text_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        rest = b""
        while block := stream.read(CHUNK_BYTES):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest, block = block[cut:], block[:cut]
            if block.strip():
                yield block
        if rest.strip():
            yield rest


class _EverySymbol(frozenset[str]):
    """Every symbol passes the per-tick check: a file's symbols are checked once, at its end,
    so that the refusal lists them all (or `--register-symbols` registers them)."""

    def __contains__(self, _: object) -> bool:
        return True


_EVERY_SYMBOL = _EverySymbol()


def _stage(conn: Connection, path: Path, trades: pl.DataFrame) -> None:
    if trades.is_empty():
        return
    codes = pl.col("conditions").list.eval(pl.element().cast(pl.String)).list.join(",")
    text = (
        trades.select(TRADES.names())
        .with_columns(conditions=pl.concat_str(pl.lit("{"), codes, pl.lit("}")))
        .write_csv(include_header=False)
    )
    if "\x00" in text:  # PostgreSQL text cannot hold it
        raise RefusedFile(path, [RowError(0, "source or event_id", "contains NUL")])
    with conn.cursor().copy("COPY import_stage FROM STDIN (FORMAT csv)") as copy:
        copy.write(text)


def _check_symbols(conn: Connection, path: Path, symbols: set[str], register: bool) -> None:
    known = {s for (s,) in conn.execute("SELECT symbol FROM symbols").fetchall()}
    unknown = sorted(symbols - known)
    if not unknown:
        return
    if not register:
        raise UnknownSymbols(
            f"{path}: unknown symbol(s) {', '.join(unknown)}: register them with "
            "--register-symbols (or add them to SYMBOLS)"
        )
    conn.execute(
        "INSERT INTO symbols (symbol) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
        (unknown,),
    )


def day_ranges(days: list[date]) -> str:
    return ", ".join(f"{a}…{b}" if a != b else str(a) for a, b in day_spans(days))


class Progress(ProgressLine):
    """Rows, rows/s and ETA: a line every few seconds when not on a terminal."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.size = max(path.stat().st_size, 1)
        self.shown = 0.0

    def show(self, rows: int, consumed: int) -> None:
        elapsed = time.monotonic() - self.started
        if not self.tty and elapsed - self.shown < 5:
            return
        self.shown = elapsed
        share = min(consumed / self.size, 1.0)
        eta = elapsed * (1 - share) / share if share else 0.0
        self.draw(
            f"{self.path.name}: {share:6.1%} {rows:,} rows, "
            f"{rows / max(elapsed, 1e-9):,.0f} rows/s, ETA {eta:.0f} s"
        )
