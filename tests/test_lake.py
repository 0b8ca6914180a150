"""The analysts' lake: exported days equal PostgreSQL's candles and trades, a re-export replaces a
day without duplicates, `mdp sql` answers the user's guide's examples correctly, offline, and the
lake follows the database: a late trade, a cancel, an import and its backfill reach an exported
day through `candles_lake_sensor`, and `matches_database` fails when the two sides differ."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pytest

from core.db import Connection, connect
from core.intervals import INTERVALS, market_date
from pipelines.candles import recompute_day
from pipelines.defs.lake import candles_lake
from pipelines.defs.resources import MarketDatabase
from pipelines.ingestion import drain_inbox
from pipelines.lake import DATABASE_FILE, REEXPORT_GAP, define_views, export_day
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


def lake_rows(lake: Path, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect() as conn:
        define_views(conn, lake)
        return conn.execute(query, params).fetchall()


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


# --- the lake follows the database --------------------------------------------------------------


@pytest.fixture
def lake(
    db: Connection, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """LAKE_DIR in a temporary folder, and no day exported yet."""
    from core.config import get_settings

    db.execute("TRUNCATE lake_exports")
    monkeypatch.setenv("LAKE_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def days_tags(first: date, last: date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def run_lake_job(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    """`candles_lake_job` as the daemon would run it (its check included)."""
    from pipelines.definitions import defs

    result = (
        defs().resolve_job_def("candles_lake_job").execute_in_process(instance=instance, tags=tags)
    )
    assert result.success
    return result


@pytest.fixture
def exported(traded: None, lake: Path, instance: dg.DagsterInstance) -> None:
    """The traded days in the lake, as `candles_lake_job` exports them."""
    run_lake_job(instance, days_tags(*DAYS))


def sensor_tick(
    instance: dg.DagsterInstance, database_url: str, gap_passed: bool = True
) -> list[dg.RunRequest]:
    """One evaluation of `candles_lake_sensor`, after REEXPORT_GAP has passed since every export
    (their times are moved back by it) unless `gap_passed` is false; the runs it asks for."""
    from pipelines.defs.lake import candles_lake_sensor

    if gap_passed:
        with connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE lake_exports SET exported_at = exported_at - %s", (REEXPORT_GAP,))
    resources = {"market_db": MarketDatabase(url=database_url)}
    found = candles_lake_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    if isinstance(found, dg.SkipReason):
        return []
    assert isinstance(found, dg.SensorResult)
    return list(found.run_requests or [])


def follow(instance: dg.DagsterInstance, database_url: str, until: Callable[[], bool]) -> int:
    """Evaluate the sensor and run what it asks for, as the daemon does, until `until` holds (at
    most five ticks); the runs it took."""
    runs = 0
    for _ in range(5):
        if until():
            return runs
        for request in sensor_tick(instance, database_url):
            assert request.tags["lake"] == "follows"
            checked = run_lake_job(instance, dict(request.tags)).get_asset_check_evaluations()
            assert [c.check_name for c in checked] == ["matches_database"]
            assert all(c.passed for c in checked)
            runs += 1
    assert until(), "the lake did not follow the database within five sensor ticks"
    return runs


def lake_equals_database(db: Connection, lake: Path) -> bool:
    """Every row of the exported days, candles of every interval and trades, alike on both
    sides."""
    columns = "symbol, bucket_start, open, high, low, close, volume, vwap, trade_count"
    for interval in INTERVALS:
        held = lake_rows(
            lake,
            f"SELECT {columns} FROM candles WHERE \"interval\" = '{interval}'"  # noqa: S608
            " ORDER BY symbol, bucket_start",
        )
        expected = db.execute(
            f'SELECT {columns} FROM candles WHERE "interval" = %s'  # noqa: S608
            " ORDER BY symbol, bucket_start",
            (interval,),
        ).fetchall()
        if held != expected:
            return False
    trade_columns = "symbol, ts, price, volume, source, event_id, seq, cancelled_at"
    query = f"SELECT {trade_columns} FROM trades ORDER BY seq"  # noqa: S608
    return lake_rows(lake, query) == db.execute(query).fetchall()


def day_count(db: Connection, day: date) -> int:
    [(n,)] = db.execute(
        "SELECT count(*) FROM trades WHERE ts >= %s AND ts < %s", (day, day + timedelta(days=1))
    ).fetchall()
    return int(n)


def lake_day_count(lake: Path, day: date) -> int:
    [(n,)] = lake_rows(lake, "SELECT count(*) FROM trades WHERE date = ?", [day])
    return int(n)


@pytest.mark.usefixtures("exported")
def test_a_late_trade_for_an_exported_day_reaches_the_lake(
    client: httpx.Client, db: Connection, database_url: str, lake: Path,
    instance: dg.DagsterInstance,
) -> None:  # fmt: skip
    assert lake_equals_database(db, lake)

    # A new high for the first day, an hour after its last trade was exported.
    send(client, [tick(1000, symbol="AAPL", ts=f"{DAYS[0]}T12:00:30Z", price=999.0)])
    drain_inbox(db)
    assert lake_day_count(lake, DAYS[0]) == day_count(db, DAYS[0]) - 1  # the lake is behind
    assert sensor_tick(instance, database_url, gap_passed=False) == []  # exported just now

    runs = follow(instance, database_url, until=lambda: lake_equals_database(db, lake))
    assert runs == 1
    [(high,)] = lake_rows(
        lake,
        "SELECT high FROM candles WHERE \"interval\" = '1m' AND symbol = 'AAPL'"
        " AND bucket_start = ?",
        [datetime.fromisoformat(f"{DAYS[0]}T12:00:00+00:00")],
    )
    assert high == 999.0
    assert sensor_tick(instance, database_url) == []  # nothing changed since


@pytest.mark.usefixtures("exported")
def test_a_cancel_on_an_exported_day_reaches_the_lake(
    client: httpx.Client, db: Connection, database_url: str, lake: Path,
    instance: dg.DagsterInstance,
) -> None:  # fmt: skip
    [(day, volume)] = db.execute(
        "SELECT (ts AT TIME ZONE 'UTC')::date, volume FROM trades WHERE event_id = 'e-1'"
    ).fetchall()
    answer = client.post(
        "/ingest/cancels", json={"trades": [{"source": "XNAS", "event_id": "e-1"}]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["outcome"] == "cancelled"
    assert not lake_equals_database(db, lake)

    [request] = sensor_tick(instance, database_url)  # the cancelled trade's day, alone
    assert request.tags["dagster/asset_partition_range_start"] == day.isoformat()
    assert request.tags["dagster/asset_partition_range_end"] == day.isoformat()
    follow(instance, database_url, until=lambda: lake_equals_database(db, lake))
    [(cancelled,)] = lake_rows(
        lake, "SELECT cancelled_at IS NOT NULL FROM trades WHERE event_id = 'e-1'"
    )
    assert cancelled
    [(day_volume,)] = lake_rows(
        lake, "SELECT sum(volume) FROM candles WHERE \"interval\" = '1d' AND date = ?", [day]
    )
    [(kept,)] = db.execute(
        "SELECT sum(volume) FROM trades WHERE cancelled_at IS NULL AND updates_volume"
        " AND ts >= %s AND ts < %s",
        (day, day + timedelta(days=1)),
    ).fetchall()
    assert day_volume == pytest.approx(kept) and volume > 0


@pytest.mark.usefixtures("traded")
def test_a_late_trade_that_changes_no_candle_reaches_the_lake(
    client: httpx.Client, db: Connection, database_url: str, lake: Path,
    instance: dg.DagsterInstance,
) -> None:  # fmt: skip
    # A trade cancelled while pending is promoted into no candle; so is one with condition 15
    # (Market Center Official Close), which updates no field of any candle.
    send(client, [tick(1002, ts=f"{DAYS[0]}T20:00:00Z")])
    cancel = {"trades": [{"source": "XNAS", "event_id": "e-1002"}]}
    assert client.post("/ingest/cancels", json=cancel).status_code == 200
    run_lake_job(instance, days_tags(*DAYS))
    send(client, [tick(1001, ts=f"{DAYS[1]}T20:00:00Z", conditions=[15])])
    drain_inbox(db)
    assert [lake_day_count(lake, day) for day in DAYS] == [day_count(db, d) - 1 for d in DAYS]
    assert follow(instance, database_url, until=lambda: lake_equals_database(db, lake)) == 1


@pytest.mark.usefixtures("exported")
def test_an_import_and_its_backfill_reach_the_lake(
    db: Connection, database_url: str, lake: Path, instance: dg.DagsterInstance,
    dagster_env: dict[str, str],
) -> None:  # fmt: skip
    from pipelines.defs.candles import candles

    history = lake / "history.ndjson"
    history.write_text("".join(
        json.dumps(tick(2000 + n, symbol="MSFT", ts=f"{DAYS[0]}T0{n}:15:00Z", price=300.0 + n))
        + "\n"
        for n in range(5)
    ))  # fmt: skip
    env = {**dagster_env, "MDP_DATA_DIR": str(lake / "data"), "LAKE_DIR": str(lake)}
    imported = subprocess.run(
        [sys.executable, "-m", "mdp", "import", str(history), "--no-backfill"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    backfill = dg.materialize(  # what `mdp import` then asks Dagster for
        [candles],
        instance=instance,
        resources={"market_db": MarketDatabase(url=database_url)},
        tags=days_tags(DAYS[0], DAYS[0]),
    )
    assert backfill.success
    assert lake_day_count(lake, DAYS[0]) == day_count(db, DAYS[0]) - 5
    assert follow(instance, database_url, until=lambda: lake_equals_database(db, lake)) == 1


@pytest.mark.usefixtures("traded")
def test_the_sensor_follows_backfills_leaves_today_to_its_schedule_and_asks_once(
    client: httpx.Client, db: Connection, database_url: str, lake: Path,
    instance: dg.DagsterInstance,
) -> None:  # fmt: skip
    from core.config import get_settings
    from pipelines.defs.candles import candles

    today = market_date(datetime.now(UTC), get_settings().market_zone)
    send(client, [tick(3000, ts=f"{today}T00:00:01Z")])
    drain_inbox(db)  # today changes; the schedule exports it every 5 minutes
    backfill = dg.materialize(
        [candles],
        instance=instance,
        resources={"market_db": MarketDatabase(url=database_url)},
        tags=days_tags(*DAYS),
    )
    assert backfill.success

    [request] = sensor_tick(instance, database_url)
    assert request.tags == {
        "lake": "follows", "dagster/max_runtime": "3600", **days_tags(*DAYS)
    }  # fmt: skip
    # Asked for and not yet run: the next tick does not ask again.
    instance.add_run(dg.DagsterRun(
        job_name="candles_lake_job", status=dg.DagsterRunStatus.NOT_STARTED, tags=request.tags
    ))  # fmt: skip
    assert sensor_tick(instance, database_url) == []


@pytest.mark.usefixtures("exported")
def test_the_check_fails_when_the_lake_and_the_database_differ(
    client: httpx.Client, db: Connection, database_url: str, lake: Path,
    instance: dg.DagsterInstance,
) -> None:  # fmt: skip
    from pipelines.definitions import defs

    def check() -> dg.AssetCheckEvaluation:
        job = defs().resolve_job_def("candles_lake_check_job")
        [evaluation] = job.execute_in_process(instance=instance).get_asset_check_evaluations()
        return evaluation

    agreeing = check()
    assert agreeing.passed
    assert agreeing.metadata["days_checked"].value == 2

    # A change behind the change log's back (no writer of the platform does this).
    db.execute("UPDATE trades SET volume = volume + 1 WHERE event_id = 'e-0'")
    differing = check()
    assert not differing.passed
    assert differing.metadata["days_differing"].value == 1
    assert "trades.volume" in (differing.description or "")
    db.execute("UPDATE trades SET volume = volume - 1 WHERE event_id = 'e-0'")
    assert check().passed

    (lake / "candles" / "interval=1h" / f"date={DAYS[1]}" / "part.parquet").unlink()
    lost = check()
    assert not lost.passed
    assert f"{DAYS[1]}: candles_1h.candles" in (lost.description or "")
    run_lake_job(instance, days_tags(DAYS[1], DAYS[1]))
    assert check().passed

    # A late trade the lake does not hold yet: on its way, then overdue past the window.
    send(client, [tick(4000, ts=f"{DAYS[0]}T13:00:00Z")])
    drain_inbox(db)
    waiting = check()
    assert waiting.passed and waiting.metadata["days_on_their_way"].value == 1
    db.execute("UPDATE lake_exports SET stale_since = stale_since - interval '11 minutes'")
    overdue = check()
    assert not overdue.passed and overdue.metadata["days_overdue"].value == 1
    follow(instance, database_url, until=lambda: lake_equals_database(db, lake))
    assert check().passed
