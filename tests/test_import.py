"""`mdp import`: Polygon/Massive flat files, Binance trades and aggTrades, and our own ticks,
written here (duplicates, equal timestamps, minute and day boundaries, ns/µs/ms times, .gz and
.zip): exact trades and candles, a re-import that changes nothing, a bad row that refuses the
whole file, unknown symbols refused unless registered, and the backfill of the days touched."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from core.db import Connection, connect, with_database
from pipelines.candles import recompute_day
from tests.candle_reference import assert_candles_match_trades
from tests.conftest import ROOT

DAY = date(2026, 11, 20)
START = datetime(2026, 11, 20, tzinfo=UTC)
# Equal times, the last microsecond of a minute and of the day, and the first of the next day.
MOMENTS = [
    START + timedelta(hours=9, minutes=30),
    START + timedelta(hours=9, minutes=30),
    START + timedelta(hours=9, minutes=31, microseconds=-1),
    START + timedelta(days=1, microseconds=-1),
    START + timedelta(days=1),
    *(START + timedelta(hours=10, seconds=7 * i) for i in range(200)),
]


def ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def polygon_file(folder: Path, *, bad_line: int | None = None) -> Path:
    """A `trades_v1` file, gzipped; its second-to-last row resends the first (same identity)."""
    path = folder / "2026-11-20.csv.gz"
    header = ("ticker,conditions,correction,exchange,id,participant_timestamp,price,"
              "sequence_number,sip_timestamp,size,tape,trf_id,trf_timestamp")  # fmt: skip
    rows = []
    for i, moment in enumerate(MOMENTS):
        ticker = ("AAPL", "MSFT")[i % 2]
        conditions = ["12,37", "", "14", "10", "2,37", "14,41", "15"][i % 7]
        rows.append([ticker, conditions, "", 11, f"{1000 + i}", ns(moment) - 500, 100.0 + i % 13,
                     i, ns(moment) + 789, 10 + i % 90, 3, "", ""])  # fmt: skip
    rows.append([*rows[0][:6], 999.0, *rows[0][7:]])  # a resend, changed: the first one wins
    rows.append(["AAPL", "", "", 12, "1000", 0, 101.5, 0, ns(MOMENTS[0]) + 789, 5, 3, 7, 0])
    if bad_line is not None:
        rows[bad_line - 2][6] = -1  # line 1 is the header
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header.split(","))
    writer.writerows(rows)
    path.write_bytes(gzip.compress(buffer.getvalue().encode()))
    return path


def binance_file(folder: Path, *, aggregated: bool, micros: bool) -> Path:
    """A zipped Binance file named as Binance names them (the symbol comes from the name)."""
    kind = "aggTrades" if aggregated else "trades"
    name = f"BTCUSDT-{kind}-{DAY}.csv"
    lines = []
    for i, moment in enumerate(MOMENTS):
        time = ns(moment) // 1000 if micros else ns(moment) // 1_000_000
        price, qty = 60_000 + i % 17, 0.001 * (1 + i % 5)
        if aggregated:
            lines.append(f"{500 + i},{price},{qty},{9000 + i},{9000 + i},{time},True,True")
        else:
            lines.append(f"{700 + i},{price},{qty},{price * qty},{time},False,True")
    lines.append(lines[3])  # the same trade twice
    path = folder / name.replace(".csv", ".zip")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, "\n".join(lines) + "\n")
    return path


def tick_files(folder: Path) -> list[Path]:
    """Our tick shape as NDJSON (RFC 3339 times), CSV (epoch milliseconds) and Parquet."""
    ticks = [
        {"symbol": "TSLA", "price": 200.0 + i % 7, "volume": 1 + i % 3,
         "ts": moment.isoformat().replace("+00:00", "Z"), "source": "FILE", "event_id": f"t-{i}"}
        for i, moment in enumerate(MOMENTS)
    ]  # fmt: skip
    ndjson = folder / "ticks.ndjson"
    ndjson.write_text("".join(json.dumps(t) + "\n" for t in ticks))
    as_ms = [{**t, "event_id": f"c-{i}", "ts": ns(MOMENTS[i]) // 1_000_000} for i, t in
             enumerate(ticks)]  # fmt: skip
    csv_path = folder / "ticks.csv"
    pl.DataFrame(as_ms).write_csv(csv_path)
    parquet = folder / "ticks.parquet"
    pl.DataFrame([{**t, "event_id": f"p-{i}"} for i, t in enumerate(ticks)]).write_parquet(parquet)
    return [ndjson, csv_path, parquet]


def mdp_import(env: dict[str, str], *args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mdp", "import", *map(str, args)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def count(db: Connection, sql: str = "SELECT count(*) FROM trades") -> int:
    [(n,)] = db.execute(sql).fetchall()
    return int(n)


def test_files_of_every_format_import_exactly_and_twice_changes_nothing(
    db: Connection,
    dagster_env: dict[str, str],
    tmp_path: Path,
    database_url: str,
    client: httpx.Client,
) -> None:
    files = [
        polygon_file(tmp_path),
        binance_file(tmp_path, aggregated=False, micros=False),
        binance_file(tmp_path, aggregated=True, micros=True),
        *tick_files(tmp_path),
    ]
    env = {**dagster_env, "MDP_DATA_DIR": str(tmp_path / "data")}
    done = mdp_import(env, *files, "--register-symbols", "--no-backfill")
    assert done.returncode == 0, done.stderr[-3000:]
    per_file = len(MOMENTS)
    # Polygon: every moment, plus one new identity (another exchange and TRF); the resend is not.
    assert count(db) == (per_file + 1) + 2 * per_file + 3 * per_file
    first = db.execute(
        "SELECT price, ts FROM trades WHERE source = 'polygon'"
        " AND event_id = 'AAPL:11::1000:2026-11-20'"
    ).fetchone()
    assert first == (100.0, MOMENTS[0] + timedelta(microseconds=0))  # first wins; ns → µs
    binance = db.execute(
        "SELECT min(ts), count(*) FROM trades WHERE source = 'binance-agg'"
    ).fetchone()
    assert binance == (MOMENTS[0], per_file)  # µs times read as µs
    assert count(db, "SELECT count(*) FROM symbols WHERE symbol = 'BTCUSDT'") == 1

    for day in (DAY, DAY + timedelta(days=1)):
        recompute_day(db, database_url, day)
    assert_candles_match_trades(db)

    before = count(db)
    again = mdp_import(env, *files, "--no-backfill")
    assert again.returncode == 0, again.stderr[-3000:]
    assert count(db) == before
    assert "nothing new" in again.stdout

    # Imported trades count, but an import is no beat of the live pipeline (none ran here), and a
    # file imported twice is no feed replaying identities.
    status = client.get("/status/ingestion").json()
    assert (status["status"], status["heartbeat_at"]) == ("unknown", None)
    assert (status["promoted_per_second"], status["duplicates_per_second"]) == (0, 0)
    assert client.get("/metrics").json()["counts"]["trades"] == before


@pytest.mark.parametrize(
    ("file", "flags", "reason"),
    [
        (partial(polygon_file, bad_line=40), (), "line 40: price must be a finite number > 0"),
        (
            partial(binance_file, aggregated=False, micros=True),
            ("--symbol", "DOGEUSDT"),
            "unknown symbol(s) DOGEUSDT",
        ),
    ],
    ids=["a bad row", "an unregistered symbol"],
)
def test_a_bad_row_or_an_unregistered_symbol_refuses_the_whole_file(
    db: Connection,
    dagster_env: dict[str, str],
    tmp_path: Path,
    file: Callable[[Path], Path],
    flags: tuple[str, ...],
    reason: str,
) -> None:
    env = {**dagster_env, "MDP_DATA_DIR": str(tmp_path / "data")}
    refused = mdp_import(env, file(tmp_path), "--no-backfill", *flags)
    assert refused.returncode == 1
    assert reason in refused.stderr
    assert count(db) == 0


def test_an_import_backfills_the_days_it_touched(
    db: Connection, dagster_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**dagster_env, "MDP_DATA_DIR": str(tmp_path / "data"), "LAKE_DIR": str(tmp_path)}
    done = mdp_import(env, polygon_file(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done, 2 day(s) materialized" in done.stdout
    assert_candles_match_trades(db)
    lake = pl.read_parquet(tmp_path / "candles" / "interval=1d" / "*" / "*.parquet")
    assert lake.height == 2 + 1  # AAPL and MSFT on DAY, one of them on the next day
    # The lake holds what the database holds: every candle of every interval, and the trades
    # with their conditions and the rules those gave.
    for interval in ("1m", "5m", "15m", "1h", "1d"):
        stored = db.execute(
            "SELECT symbol, bucket_start, open, high, low, close, volume, vwap, trade_count"
            ' FROM candles WHERE "interval" = %s ORDER BY symbol, bucket_start',
            (interval,),
        ).fetchall()
        exported = (
            pl.read_parquet(tmp_path / "candles" / f"interval={interval}" / "*" / "*.parquet")
            .sort("symbol", "bucket_start")
            .select("symbol", "bucket_start", "open", "high", "low", "close", "volume", "vwap",
                    "trade_count")
            .rows()
        )  # fmt: skip
        assert exported == stored, interval
    trades = db.execute(
        "SELECT event_id, conditions, updates_high_low, updates_open_close, updates_volume"
        " FROM trades ORDER BY event_id"
    ).fetchall()
    exported_trades = (
        pl.read_parquet(tmp_path / "trades" / "*" / "*.parquet")
        .sort("event_id")
        .select("event_id", "conditions", "updates_high_low", "updates_open_close",
                "updates_volume")
        .rows()
    )  # fmt: skip
    assert exported_trades == trades
    assert any(c is None for _, c, *_ in trades) and any(c == [2, 37] for _, c, *_ in trades)


def trades_v1(path: Path, rows: list[tuple[str, int, datetime]]) -> Path:
    """A plain `trades_v1` file of (ticker, id, SIP time) rows, exchange 4, no TRF."""
    header = ("ticker,conditions,correction,exchange,id,participant_timestamp,price,"
              "sequence_number,sip_timestamp,size,tape,trf_id,trf_timestamp")  # fmt: skip
    lines = [header] + [
        f"{ticker},,,4,{trade_id},{ns(at)},{100 + trade_id % 7},{n},{ns(at)},100,3,,"
        for n, (ticker, trade_id, at) in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_polygon_ids_repeat_every_trading_day_and_each_day_is_kept(
    db: Connection, database_url: str, tmp_path: Path
) -> None:
    """Polygon numbers trades per ticker, exchange and TRF within a New York trading day: two
    daily files whose ids both start at 1 are two days of trades, not one day sent twice; a
    re-import changes nothing. The day is New York's: 04:59 and 05:01 UTC in November are two
    trading days, and DST is followed (03:30 UTC on 2 November 2026 is the 1st in New York)."""
    from mdp.imports import import_file

    days = [datetime(2026, 11, 19, 15, tzinfo=UTC), datetime(2026, 11, 20, 15, tzinfo=UTC)]
    files = [
        trades_v1(tmp_path / f"{day:%Y-%m-%d}.csv", [
            ("AAPL", i, day + timedelta(seconds=i)) for i in range(1, 1001)
        ])
        for day in days
    ]  # fmt: skip
    edges = trades_v1(tmp_path / "edges.csv", [
        ("MSFT", 7, datetime(2026, 11, 20, 4, 59, tzinfo=UTC)),
        ("MSFT", 7, datetime(2026, 11, 20, 5, 1, tzinfo=UTC)),
        ("MSFT", 8, datetime(2026, 11, 2, 3, 30, tzinfo=UTC)),
    ])  # fmt: skip
    stored = [import_file(database_url, f, "polygon-trades", None, False).stored for f in files]
    assert stored == [1000, 1000]
    assert import_file(database_url, edges, "polygon-trades", None, False).stored == 3
    ids = {r[0] for r in db.execute("SELECT event_id FROM trades WHERE symbol = 'MSFT'")}
    assert ids == {"MSFT:4::7:2026-11-19", "MSFT:4::7:2026-11-20", "MSFT:4::8:2026-11-01"}
    again = [import_file(database_url, f, "polygon-trades", None, False).stored for f in files]
    assert again == [0, 0]
    assert count(db) == 2003


def test_polygon_trades_imported_before_take_their_trading_day(server_url: str) -> None:
    """A database whose Polygon trades were imported without the day in their identity gets it
    from each trade's own time when migrated, so importing the same file again adds nothing."""
    from yoyo import get_backend, read_migrations

    from core.db import MIGRATIONS_DIR, create_database, drop_database, prepare, sqlalchemy_url

    name = f"mdp_ids_{uuid.uuid4().hex[:8]}"
    create_database(server_url, name)
    url = with_database(server_url, name)
    try:
        backend = get_backend(sqlalchemy_url(url))
        earlier = read_migrations(str(MIGRATIONS_DIR)).filter(lambda m: m.id < "0012")
        with backend.lock():
            backend.apply_migrations(backend.to_apply(earlier))
        with connect(url) as conn:
            conn.execute(
                "INSERT INTO trades (source, event_id, seq, symbol, ts, price, volume,"
                " received_at, batch_id) VALUES"
                " ('polygon', 'AAPL:4::1', -2, 'AAPL', '2026-11-20 04:59+00', 1, 1, now(), 0),"
                " ('binance', 'BTCUSDT:1', -1, 'BTCUSDT', '2026-11-20 04:59+00', 1, 1, now(), 0)"
            )
            conn.commit()
        prepare(url, ["AAPL"])
        with connect(url) as conn:
            ids = sorted(r[0] for r in conn.execute("SELECT event_id FROM trades"))
        assert ids == ["AAPL:4::1:2026-11-19", "BTCUSDT:1"]
    finally:
        drop_database(server_url, name)
