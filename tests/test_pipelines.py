"""The Dagster code location: it loads with the contracted names; the sensor, the micro-batch job,
the partitioned candle assets, their checks, the CLI backfill and the run-history pruning do what
operators rely on. Real Dagster runs against the real PostgreSQL."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pytest

from mdp.database import (
    Connection,
)
from mdp.intervals import INTERVALS
from pipelines.definitions import defs
from pipelines.defs.candles import candles
from pipelines.defs.ingestion import trade_inbox_sensor
from pipelines.defs.maintenance import prune_runs
from pipelines.defs.resources import MarketDatabase
from pipelines.ingestion import drain_inbox
from tests.candle_reference import assert_candles_match_trades
from tests.conftest import BIN, ROOT
from tests.test_candles import at, send
from tests.test_ingest_api import tick

CANDLE_KEYS = [f"candles_{i}" for i in INTERVALS]
DAGSTER = BIN / "dagster"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def market_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> str:
    """Definitions bind the market database from DATABASE_URL, as `mdp up` sets it."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def dagster(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DAGSTER), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_code_location_loads_with_the_contracted_names(dagster_env: dict[str, str]) -> None:
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    keys = {spec.key.to_user_string() for spec in loaded.resolve_all_asset_specs()}
    assert keys >= {"trades", *CANDLE_KEYS}
    assert loaded.resolve_job_def("ingest_trades_job")
    sensor = loaded.resolve_sensor_def("trade_inbox_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    schedules = (
        "finalize_yesterday_schedule",
        "candle_checks_schedule",
        "prune_run_history_schedule",
    )
    for name in schedules:
        schedule = loaded.resolve_schedule_def(name)
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    for spec in loaded.resolve_all_asset_specs():
        if spec.key.to_user_string() in CANDLE_KEYS:
            assert spec.freshness_policy is not None
            assert isinstance(spec.partitions_def, dg.DailyPartitionsDefinition)

    validated = dagster(dagster_env, "definitions", "validate", "-m", "pipelines.definitions")
    assert validated.returncode == 0, validated.stderr


def sensor_context(
    instance: dg.DagsterInstance, database_url: str, cursor: str | None = None
) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"market_db": MarketDatabase(url=database_url)}
    )


def test_the_sensor_skips_an_empty_inbox_but_moves_the_heartbeat(
    db: Connection, database_url: str, instance: dg.DagsterInstance
) -> None:
    for _ in range(3):
        result = trade_inbox_sensor(sensor_context(instance, database_url))
        assert isinstance(result, dg.SkipReason)
    heartbeats = db.execute("SELECT inbox_rows, finished_at FROM ingest_batches").fetchall()
    assert len(heartbeats) == 1  # a run of idle cycles shares one row
    assert heartbeats[0][0] == 0
    assert datetime.now(UTC) - heartbeats[0][1] < timedelta(minutes=1)


def test_the_sensor_asks_one_run_per_pending_range_and_again_if_it_was_left_behind(
    client: httpx.Client, db: Connection, database_url: str, instance: dg.DagsterInstance
) -> None:
    send(client, [tick(i) for i in range(3)])
    [(low, high)] = db.execute("SELECT min(seq), max(seq) FROM trade_inbox").fetchall()

    first = trade_inbox_sensor(sensor_context(instance, database_url))
    assert isinstance(first, dg.SensorResult)
    assert [r.run_key for r in first.run_requests or []] == [f"inbox-{low}-{high}"]

    # Same range, no run in flight: its run failed or was killed. Ask again, under a new key.
    again = trade_inbox_sensor(sensor_context(instance, database_url, first.cursor))
    assert isinstance(again, dg.SensorResult)
    assert [r.run_key for r in again.run_requests or []] == [f"inbox-{low}-{high}-retry-1"]

    # A run in flight: wait for it.
    instance.add_run(
        dg.DagsterRun(job_name="ingest_trades_job", status=dg.DagsterRunStatus.STARTED)
    )
    waiting = trade_inbox_sensor(sensor_context(instance, database_url, again.cursor))
    assert isinstance(waiting, dg.SkipReason)


def test_a_micro_batch_run_records_the_candle_partitions_it_touched(
    client: httpx.Client, db: Connection, market_env: str, instance: dg.DagsterInstance
) -> None:
    send(client, [tick(1, ts="2026-11-19T23:59:59Z"), tick(2)])
    result = defs().resolve_job_def("ingest_trades_job").execute_in_process(instance=instance)
    assert result.success
    events = result.asset_materializations_for_node("trades")
    [trades_event] = [e for e in events if e.asset_key == dg.AssetKey("trades")]
    assert trades_event.metadata["promoted"] == dg.IntMetadataValue(2)
    for key in CANDLE_KEYS:
        for day in ("2026-11-19", "2026-11-20"):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day]), limit=1
            ).records
            assert len(records) == 1, (key, day)
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (0,)
    assert_candles_match_trades(db)


def test_partition_runs_recompute_days_and_checks_catch_what_disagrees(
    client: httpx.Client, db: Connection, market_env: str, instance: dg.DagsterInstance
) -> None:
    # Yesterday and today: the window the scheduled check runs look at.
    day2 = datetime.now(UTC).date()
    day1 = day2 - timedelta(days=1)
    days = [day1, day2, day1, day2, day2]
    send(client, [tick(i, ts=at(day, f"00:00:0{i}"), price=10.0 + i) for i, day in enumerate(days)])
    drain_inbox(db)
    db.execute("DELETE FROM candles")
    loaded = defs()

    finalize = loaded.resolve_job_def("finalize_candles_job").execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": day1.isoformat(),
            "dagster/asset_partition_range_end": day2.isoformat(),
        },
    )
    assert finalize.success
    materialized = finalize.asset_materializations_for_node("candles")
    assert sorted(m.asset_key.to_user_string() for m in materialized) == sorted(CANDLE_KEYS * 2)
    evaluations = finalize.get_asset_check_evaluations()
    assert len(evaluations) == 2 * len(INTERVALS)
    assert all(e.passed for e in evaluations)
    assert_candles_match_trades(db)

    db.execute("UPDATE candles SET high = low - 1 WHERE \"interval\" = '1h'")
    db.execute(
        "DELETE FROM candles WHERE \"interval\" = '1d' AND bucket_start = %s",
        (at(day2, "00:00:00"),),
    )
    checks = loaded.resolve_job_def("candle_checks_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    failed = {
        (e.asset_key.to_user_string(), e.check_name)
        for e in checks.get_asset_check_evaluations()
        if not e.passed
    }
    assert failed == {("candles_1h", "ohlc_invariants"), ("candles_1d", "reconciles_with_trades")}


def test_a_cli_backfill_recomputes_exactly_the_range(
    client: httpx.Client, db: Connection, dagster_env: dict[str, str]
) -> None:
    days = [datetime(2026, 11, d).date() for d in (17, 18, 19, 20)]
    send(client, [tick(i, ts=at(day, "12:00:00"), price=10.0 + i) for i, day in enumerate(days)])
    drain_inbox(db)
    db.execute("DELETE FROM candles")

    selection = ",".join(CANDLE_KEYS)
    backfill = dagster(
        dagster_env,
        "asset", "materialize", "-m", "pipelines.definitions",
        "--select", selection, "--partition-range", "2026-11-18...2026-11-19",
    )  # fmt: skip
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    covered = db.execute(
        "SELECT DISTINCT bucket_start::date FROM candles WHERE \"interval\" = '1d' ORDER BY 1"
    ).fetchall()
    assert covered == [(days[1],), (days[2],)]
    counts = db.execute('SELECT "interval", count(*) FROM candles GROUP BY 1').fetchall()
    assert dict(counts) == dict.fromkeys(INTERVALS, 2)


def test_pruning_keeps_dagster_history_bounded(
    client: httpx.Client, db: Connection, market_env: str, instance: dg.DagsterInstance
) -> None:
    loaded = defs()
    send(client, [tick(1)])
    assert loaded.resolve_job_def("ingest_trades_job").execute_in_process(instance=instance).success
    assert (
        loaded.resolve_job_def("prune_run_history_job")
        .execute_in_process(instance=instance)
        .success
    )
    backfill = dg.materialize(
        [candles],
        instance=instance,
        partition_key="2026-11-20",
        selection=["candles_1d"],
        resources={"market_db": MarketDatabase(url=market_env)},
    )
    assert backfill.success
    assert len(instance.get_runs()) == 3

    now = datetime.now(UTC)
    assert prune_runs(instance, now) == 0  # nothing is past retention yet
    assert prune_runs(instance, now + timedelta(days=2)) == 2  # micro-batch and maintenance runs
    assert [r.run_id for r in instance.get_runs()] == [backfill.run_id]
    assert prune_runs(instance, now + timedelta(days=91)) == 1
    assert instance.get_runs() == []


def test_finalization_after_midnight_targets_yesterday(market_env: str) -> None:
    loaded = defs()
    schedule = loaded.resolve_schedule_def("finalize_yesterday_schedule")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 2, 0, 10, tzinfo=UTC),
        repository_def=loaded.get_repository_def(),
    )
    data = schedule.evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests or []] == ["2026-03-01"]
