"""The analysts' lake: exported days equal PostgreSQL's candles and trades, a re-export replaces a
day without duplicates, and `mdp sql` answers the user's guide's examples correctly, offline."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pytest

from core.db import Connection
from core.intervals import INTERVALS
from pipelines.candles import recompute_day
from pipelines.defs.lake import candles_lake
from pipelines.defs.resources import MarketDatabase
from pipelines.ingestion import drain_inbox
from pipelines.lake import DATABASE_FILE, define_views, export_day
from tests.support import send, tick

ROOT = Path(__file__).resolve().parent.parent
DAYS = (date(2026, 11, 19), date(2026, 11, 20))


@pytest.fixture
def traded(client: httpx.Client, db: Connection) -> None:
    clock = "T{:02}:{:02}:{:02}Z"
    send(client, [
        tick(i, symbol=("AAPL", "MSFT")[i % 2], price=100.0 + i % 17, volume=1 + i % 5,
             ts=str(DAYS[i % 3 % 2]) + clock.format(i % 24, i % 60, i % 7))
        for i in range(300)
    ])  # fmt: skip
    drain_inbox(db)


def lake_rows(lake: Path, query: str) -> list[tuple[Any, ...]]:
    with duckdb.connect() as conn:
        define_views(conn, lake)
        return conn.execute(query).fetchall()


@pytest.mark.usefixtures("traded")
def test_the_lake_equals_the_database_for_exported_days(
    db: Connection, database_url: str, tmp_path: Path
) -> None:
    for day in DAYS:
        exported = export_day(database_url, tmp_path, day)
        assert exported.trades > 0 and exported.candles["1m"] > 0
    for interval in INTERVALS:
        expected = db.execute(
            "SELECT symbol, bucket_start, open, high, low, close, volume, vwap, trade_count"
            ' FROM candles WHERE "interval" = %s ORDER BY symbol, bucket_start',
            (interval,),
        ).fetchall()
        with duckdb.connect() as conn:
            define_views(conn, tmp_path)
            lake = conn.execute(
                "SELECT symbol, bucket_start, open, high, low, close, volume, vwap, trade_count"
                ' FROM candles WHERE "interval" = ? ORDER BY symbol, bucket_start',
                [interval],
            ).fetchall()
        assert lake == expected, interval
    expected_trades = db.execute(
        "SELECT symbol, ts, price, volume, source, event_id, seq FROM trades ORDER BY seq"
    ).fetchall()
    lake_trades = lake_rows(
        tmp_path, "SELECT symbol, ts, price, volume, source, event_id, seq FROM trades ORDER BY seq"
    )
    assert lake_trades == expected_trades


@pytest.mark.usefixtures("traded")
def test_a_re_export_replaces_the_day_without_duplicates(
    client: httpx.Client, db: Connection, database_url: str, tmp_path: Path
) -> None:
    export_day(database_url, tmp_path, DAYS[0])
    send(client, [tick(999, ts=f"{DAYS[0]}T12:00:00Z", price=150.0)])  # a late trade
    drain_inbox(db)
    recompute_day(db, database_url, DAYS[0])
    export_day(database_url, tmp_path, DAYS[0])
    [(trades,)] = db.execute(
        "SELECT count(*) FROM trades WHERE ts >= %s AND ts < %s", (DAYS[0], DAYS[1])
    ).fetchall()
    assert lake_rows(tmp_path, "SELECT count(*) FROM trades") == [(trades,)]
    day_volume = lake_rows(tmp_path, "SELECT sum(volume) FROM candles WHERE \"interval\" = '1d'")
    minute_volume = lake_rows(tmp_path, "SELECT sum(volume) FROM candles WHERE \"interval\" = '1m'")
    assert day_volume == minute_volume
    assert not list(tmp_path.rglob("*.partial"))


def guide_queries() -> list[str]:
    readme = (ROOT / "docs" / "guide.md").read_text()
    guide = readme[readme.index("## Analyst guide") :]
    examples = re.findall(r"^# .+\n(\./run sql .+)$", guide, flags=re.M)
    return [shlex.split(line)[2] for line in examples]


def mdp_sql(lake: Path, query: str, *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mdp", "sql", query, *flags],
        env={"LAKE_DIR": str(lake), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.usefixtures("traded")
def test_mdp_sql_answers_the_guides_examples(
    db: Connection, database_url: str, tmp_path: Path
) -> None:
    for day in DAYS:
        export_day(database_url, tmp_path, day)
    vwap, returns, movers, profile = guide_queries()

    answers = json.loads(mdp_sql(tmp_path, vwap, "--format", "json"))
    expected = db.execute(
        "SELECT symbol, (bucket_start AT TIME ZONE 'UTC')::date, sum(vwap * volume) / sum(volume)"
        " FROM candles WHERE \"interval\" = '1m' GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert [(a["symbol"], a["date"]) for a in answers] == [
        (s, d.isoformat()) for s, d, _ in expected
    ]
    assert [a["vwap"] for a in answers] == pytest.approx([v for _, _, v in expected])

    five_minute = mdp_sql(tmp_path, returns, "--format", "csv").splitlines()
    assert five_minute[0] == "symbol,bucket_start,ret"
    [(buckets,)] = db.execute("SELECT count(*) FROM candles WHERE \"interval\" = '5m'").fetchall()
    assert len(five_minute) == 1 + buckets

    top = json.loads(mdp_sql(tmp_path, movers, "--format", "json"))
    daily = db.execute(
        "SELECT symbol, (close - open) / open FROM candles WHERE \"interval\" = '1d'"
    ).fetchall()
    assert [t["change"] for t in top] == pytest.approx(
        sorted((c for _, c in daily), key=abs, reverse=True)[:5]
    )

    levels = json.loads(mdp_sql(tmp_path, profile, "--format", "json"))
    [(volume,)] = db.execute("SELECT sum(volume) FROM trades").fetchall()
    assert sum(level["volume"] for level in levels) == pytest.approx(volume)
    assert "symbol" in mdp_sql(tmp_path, profile)  # the default: a table for people


def test_mdp_sql_on_an_empty_lake_and_a_bad_query(tmp_path: Path) -> None:
    assert json.loads(
        mdp_sql(tmp_path, "SELECT count(*) AS n FROM candles", "--format", "json")
    ) == [{"n": 0}]
    failed = subprocess.run(
        [sys.executable, "-m", "mdp", "sql", "SELEC nonsense"],
        env={"LAKE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 2
    assert "mdp sql:" in failed.stderr


@pytest.mark.usefixtures("traded")
def test_the_candles_lake_asset_exports_its_partitions_and_the_duckdb_file(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.config import get_settings

    monkeypatch.setenv("LAKE_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [candles_lake],
                instance=instance,
                resources={"market_db": MarketDatabase(url=database_url)},
                tags={
                    "dagster/asset_partition_range_start": DAYS[0].isoformat(),
                    "dagster/asset_partition_range_end": DAYS[1].isoformat(),
                },
            )
        assert result.success
        assert len(result.asset_materializations_for_node("candles_lake")) == 2
    finally:
        get_settings.cache_clear()
    with duckdb.connect(str(tmp_path / DATABASE_FILE), read_only=True) as conn:
        assert conn.execute("SELECT count(DISTINCT date) FROM trades").fetchone() == (2,)


@pytest.mark.usefixtures("traded")
def test_the_lake_follows_candle_backfills_but_not_micro_batches(
    database_url: str, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.definitions import defs
    from pipelines.defs.candles import candles
    from pipelines.defs.lake import candles_lake_sensor

    monkeypatch.setenv("DATABASE_URL", database_url)
    with dg.instance_for_test() as instance:
        resources = {"market_db": MarketDatabase(url=database_url)}
        backfill = dg.materialize(
            [candles],
            instance=instance,
            resources=resources,
            tags={
                "dagster/asset_partition_range_start": DAYS[0].isoformat(),
                "dagster/asset_partition_range_end": DAYS[1].isoformat(),
            },
        )
        assert backfill.success
        send(client, [tick(1, ts="2026-11-22T10:00:00Z", event_id="late")])
        micro_batch = (
            defs().resolve_job_def("ingest_trades_job").execute_in_process(instance=instance)
        )
        assert micro_batch.success
        assert {m.partition for m in micro_batch.asset_materializations_for_node("trades")} == {
            None,  # trades
            "2026-11-22",  # its candles
        }

        result = candles_lake_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SensorResult)
        [request] = result.run_requests or []
        assert request.tags["dagster/asset_partition_range_start"] == DAYS[0].isoformat()
        assert request.tags["dagster/asset_partition_range_end"] == DAYS[1].isoformat()
        again = candles_lake_sensor(
            dg.build_sensor_context(instance=instance, cursor=result.cursor)
        )
        assert isinstance(again, dg.SkipReason)
