"""Historical trade files as canonical trades, in bounded chunks: Polygon/Massive flat files
(`trades_v1`), Binance spot `trades` and `aggTrades`. Every row is checked; a chunk either comes
out whole, as columns `line, symbol, ts (epoch µs), price, volume, source, event_id, conditions`
and the three update rules the conditions give, or its bad rows are listed with their line
numbers, fields and reasons. Plain Polars, no Dagster."""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl

from core.conditions import REGULAR, ConditionRules, Rules, rules_of
from core.ticks import SYMBOL

CHUNK_BYTES = 16 * 2**20  # of decompressed text per chunk: memory stays bounded by it
POLYGON_COLUMNS = (
    "ticker", "conditions", "correction", "exchange", "id", "participant_timestamp", "price",
    "sequence_number", "sip_timestamp", "size", "tape", "trf_id", "trf_timestamp",
)  # fmt: skip
BINANCE_TRADES = ("id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch")
BINANCE_AGG_TRADES = (
    "agg_id", "price", "qty", "first_id", "last_id", "time", "isBuyerMaker", "isBestMatch",
)  # fmt: skip
BINANCE_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?:trades|aggTrades)-")
TRADES = pl.Schema(
    {
        "line": pl.Int64(),
        "symbol": pl.String(),
        "ts": pl.Int64(),
        "price": pl.Float64(),
        "volume": pl.Float64(),
        "source": pl.String(),
        "event_id": pl.String(),
        "conditions": pl.List(pl.Int16()),
        "updates_high_low": pl.Boolean(),
        "updates_open_close": pl.Boolean(),
        "updates_volume": pl.Boolean(),
    }
)
RULES = ("updates_high_low", "updates_open_close", "updates_volume")
MICROS_FROM_1970_TO_YEAR_1 = -62_135_596_800_000_000
# SIP trade ids are unique per ticker, exchange and TRF within a trading day only (exchanges number
# their executions per day): the day, in New York, is part of a Polygon trade's identity.
POLYGON_TRADING_ZONE = "America/New_York"


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str


class RefusedFile(ValueError):
    """A file with bad rows: none of it is stored."""

    def __init__(self, path: Path, errors: list[RowError]) -> None:
        self.path = path
        self.errors = errors
        shown = "; ".join(f"line {e.line}: {e.field} {e.reason}" for e in errors[:20])
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        super().__init__(f"{path}: {len(errors)} bad row(s): {shown}{more}")


def guess_format(path: Path) -> str:
    """The format a file's name suggests (Binance names its files `SYMBOL-trades-…` and
    `SYMBOL-aggTrades-…`; NDJSON and Parquet are ticks), else its header: a CSV of ticks names
    their fields, anything else is taken for Polygon's flat files."""
    name = path.name
    if "-aggTrades-" in name:
        return "binance-aggtrades"
    if "-trades-" in name:
        return "binance-trades"
    if name.endswith((".ndjson", ".jsonl", ".parquet")):
        return "ticks"
    with _open(path) as (text, _):
        header = set(text.readline().decode(errors="replace").strip().split(","))
    return "ticks" if {"symbol", "event_id"} <= header else "polygon-trades"


def binance_symbol(path: Path) -> str | None:
    found = BINANCE_NAME.match(path.name)
    return found["symbol"] if found else None


@dataclass
class Chunk:
    trades: pl.DataFrame  # TRADES
    consumed: int  # bytes of the (compressed) file read so far


def read_polygon(path: Path, *, now_us: int, conditions: ConditionRules) -> Iterator[Chunk]:
    """Polygon/Massive `trades_v1` (`.csv` or `.csv.gz`): identity
    ("polygon", "<ticker>:<exchange>:<trf_id>:<id>:<New York trading date>"), time the SIP
    timestamp (ns), sale conditions from `conditions` (codes separated by commas; every one
    must be registered)."""
    for text, first_line, consumed in _lines(path, header=",".join(POLYGON_COLUMNS)):
        raw = _csv(text, POLYGON_COLUMNS, first_line)
        ticker = pl.col("ticker")
        sip = pl.col("sip_timestamp").cast(pl.Int64, strict=False)
        listed = pl.col("conditions")
        codes = (
            pl.when(listed.str.strip_chars() != "")
            .then(listed)
            .str.split(",")
            .list.eval(pl.element().str.strip_chars().cast(pl.Int16, strict=False))
        )
        trading_day = (
            pl.from_epoch(sip, time_unit="ns")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(POLYGON_TRADING_ZONE)
            .dt.date()
            .cast(pl.String)
        )
        parsed = raw.select(
            "line",
            symbol=ticker,
            ts=sip // 1000,
            price=pl.col("price").cast(pl.Float64, strict=False),
            volume=pl.col("size").cast(pl.Float64, strict=False),
            source=pl.lit("polygon"),
            event_id=pl.concat_str(
                ticker,
                pl.col("exchange"),
                pl.col("trf_id").fill_null(""),
                pl.col("id"),
                trading_day,
                separator=":",
            ),
            conditions=codes,
        )
        checks = {
            "ticker": (ticker.is_null() | ~ticker.str.contains(SYMBOL.pattern), "is not a symbol"),
            "conditions": (
                codes.list.eval(pl.element().is_null() | (pl.element() < 0))
                .list.any()
                .fill_null(False),
                "is not a list of condition codes",
            ),
            "id": (pl.col("id").is_null(), "is missing"),
            "exchange": (pl.col("exchange").is_null(), "is missing"),
            "sip_timestamp": (sip.is_null(), "is not an integer of nanoseconds"),
        }
        trades = _checked(path, raw, parsed, checks, now_us)
        yield Chunk(with_rules(path, trades, conditions), consumed)


def with_rules(path: Path, trades: pl.DataFrame, table: ConditionRules) -> pl.DataFrame:
    """`trades` (with `conditions`) with the three update rules their conditions give; an
    unregistered code refuses the file. Rules are worked out once per distinct set of codes."""
    key = pl.col("conditions").list.eval(pl.element().cast(pl.String)).list.join(",")
    keyed = trades.with_columns(
        conditions=pl.when(pl.col("conditions").list.len() > 0).then(pl.col("conditions")),
        key=key.fill_null(""),
    )
    rules: dict[str, Rules] = {}
    errors = []
    for text, codes in keyed.unique("key").select("key", "conditions").iter_rows():
        unknown = sorted({code for code in codes or () if code not in table})
        if not unknown:
            rules[text] = rules_of(codes or (), table) if codes else REGULAR
            continue
        lines = keyed.filter(pl.col("key") == text)["line"].head(20).to_list()
        errors += [
            RowError(line, "conditions", f"unknown sale condition {code}")
            for line in lines
            for code in unknown
        ]
    if errors:
        raise RefusedFile(path, sorted(errors, key=lambda e: e.line))
    return keyed.with_columns(
        pl.col("key").replace_strict({k: r[i] for k, r in rules.items()}).alias(name)
        for i, name in enumerate(RULES)
    ).select(TRADES.names())


def read_binance(path: Path, *, aggregated: bool, symbol: str, now_us: int) -> Iterator[Chunk]:
    """Binance spot `trades` or `aggTrades` (`.csv` or `.zip`, header or none): identity
    ("binance", "<SYMBOL>:<id>") or ("binance-agg", "<SYMBOL>:<agg id>"); time in ms (13
    digits) or µs (16 digits, Binance's spot files since 2025)."""
    columns = BINANCE_AGG_TRADES if aggregated else BINANCE_TRADES
    key = "agg_id" if aggregated else "id"
    for text, first_line, consumed in _lines(path, header=None):
        raw = _csv(text, columns, first_line)
        if first_line == 1 and raw.height and not (raw[key][0] or "").isdigit():
            raw = raw.slice(1)  # a header line
        time = pl.col("time").cast(pl.Int64, strict=False)
        identity = pl.col(key)
        parsed = raw.select(
            "line",
            symbol=pl.lit(symbol),
            ts=pl.when(time >= 10**15).then(time).otherwise(time * 1000),
            price=pl.col("price").cast(pl.Float64, strict=False),
            volume=pl.col("qty").cast(pl.Float64, strict=False),
            source=pl.lit("binance-agg" if aggregated else "binance"),
            event_id=pl.concat_str(pl.lit(symbol), identity, separator=":"),
            conditions=pl.lit(None, pl.List(pl.Int16)),
        )
        checks = {
            key: (identity.is_null() | ~identity.str.contains(r"^\d+$"), "is not an integer id"),
            "time": (time.is_null(), "is not integer milliseconds or microseconds"),
        }
        trades = _checked(path, raw, parsed, checks, now_us)
        yield Chunk(trades.with_columns(pl.lit(True).alias(name) for name in RULES), consumed)


def _checked(
    path: Path,
    raw: pl.DataFrame,
    parsed: pl.DataFrame,
    checks: dict[str, tuple[pl.Expr, str]],
    now_us: int,
) -> pl.DataFrame:
    """`parsed` if every row passes the format's checks and the common ones (§3.4: finite
    positive price and volume, a time at most 5 minutes ahead); else RefusedFile."""
    latest = now_us + 5 * 60 * 1_000_000
    common = {
        "price": (~_positive("price"), "must be a finite number > 0"),
        "volume": (~_positive("volume"), "must be a finite number > 0"),
        "timestamp": (
            pl.col("ts").is_not_null()
            & ((pl.col("ts") > latest) | (pl.col("ts") < MICROS_FROM_1970_TO_YEAR_1)),
            "is more than 5 minutes ahead, or before the year 1",
        ),
    }
    flags = pl.concat(
        [
            raw.select("line", **{f"bad {field}": expr for field, (expr, _) in checks.items()}),
            parsed.select(**{f"bad {field}": expr for field, (expr, _) in common.items()}),
        ],
        how="horizontal",
    )
    bad = flags.filter(pl.any_horizontal(pl.col("^bad .*$").fill_null(True)))
    if bad.is_empty():
        return parsed.cast({name: TRADES[name] for name in parsed.columns})
    reasons = {field: reason for field, (_, reason) in (checks | common).items()}
    errors = [
        RowError(row["line"], field, reasons[field])
        for row in bad.iter_rows(named=True)
        for field in reasons
        if row[f"bad {field}"] in (True, None)
    ]
    raise RefusedFile(path, errors)


def _positive(column: str) -> pl.Expr:
    value = pl.col(column)
    return value.is_not_null() & value.is_finite() & (value > 0)


def _csv(text: bytes, columns: tuple[str, ...], first_line: int) -> pl.DataFrame:
    """Lines of CSV as text columns, numbered from `first_line`."""
    frame = pl.read_csv(
        io.BytesIO(text),
        has_header=False,
        new_columns=list(columns),
        infer_schema=False,
        truncate_ragged_lines=False,
    )
    return frame.with_row_index("line", offset=first_line).with_columns(
        pl.col("line").cast(pl.Int64)
    )


def _lines(path: Path, header: str | None) -> Iterator[tuple[bytes, int, int]]:
    """The file's lines in chunks of about CHUNK_BYTES (whole lines), each with the number of its
    first line and the bytes of the file read so far. With `header`, the first line must be it
    and is left out."""
    with _open(path) as (stream, raw):
        line = 1
        rest = b""
        while block := stream.read(CHUNK_BYTES):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest, block = block[cut:], block[:cut]
            if not block:
                rest = block + rest
                continue
            if line == 1 and header is not None:
                first, _, block = block.partition(b"\n")
                if first.strip().decode(errors="replace") != header:
                    raise RefusedFile(path, [RowError(1, "header", f"is not {header!r}")])
                line = 2
            yield block, line, raw.tell()
            line += block.count(b"\n")
        if rest.strip():
            yield rest + b"\n", line, raw.tell()


@contextmanager
def _open(path: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """The file's text, decompressed (`.gz`, or the one member of a `.zip`), and the raw file
    (its position tells progress)."""
    with path.open("rb") as raw:
        if path.suffix == ".gz":
            with gzip.open(raw) as text:
                yield text, raw  # type: ignore[misc]
        elif path.suffix == ".zip":
            with zipfile.ZipFile(raw) as archive:
                [member] = archive.namelist()
                with archive.open(member) as text:
                    yield text, raw
        else:
            yield raw, raw
