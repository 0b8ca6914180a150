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

from core.db import Connection, connect
from core.intervals import CANDLE_ASSETS, INTERVALS
from pipelines import names
from pipelines.definitions import defs
from pipelines.defs.candles import candles
from pipelines.defs.ingestion import (
    BEAT_PATIENCE,
    DRAIN_SECONDS,
    HANDOVER,
    START_PATIENCE,
    draining_ahead,
    trade_inbox_sensor,
)
from pipelines.defs.maintenance import prune_runs
from pipelines.defs.resources import MarketDatabase
from pipelines.ingestion import PromotedBatch, drain_continuously, drain_inbox, record_idle_cycle
from tests.candle_reference import assert_candles_match_trades
from tests.conftest import BIN, ROOT
from tests.support import at, send, tick

CANDLE_KEYS = CANDLE_ASSETS
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
    assert keys == set(names.ASSETS)  # what the command line selects is what there is
    jobs = (names.INGEST_JOB, names.CANDLE_CHECKS_JOB, names.LAKE_JOB, names.FINALIZE_JOB)
    for job in (*jobs, names.PRUNE_JOB):
        assert loaded.resolve_job_def(job)
    sensor = loaded.resolve_sensor_def("trade_inbox_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    schedules = (
        "finalize_yesterday_schedule",
        "candle_checks_schedule",
        "prune_run_history_schedule",
        "lake_today_schedule",
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


def test_the_sensor_keeps_one_drain_run_going_and_starts_the_next_before_it_ends(
    db: Connection, database_url: str, instance: dg.DagsterInstance
) -> None:
    def sensor() -> object:
        resources = {"market_db": MarketDatabase(url=database_url)}
        return trade_inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))

    def every_run_beats(runs: list[str]) -> set[str]:
        return set(runs)

    first = sensor()
    assert isinstance(first, dg.SensorResult)
    [request] = first.run_requests or []
    assert request.run_key and request.run_key.startswith("drain-")
    assert request.run_config["ops"]["trades"]["config"]["drain_seconds"] == DRAIN_SECONDS

    run = instance.add_run(
        dg.DagsterRun(job_name="ingest_trades_job", status=dg.DagsterRunStatus.NOT_STARTED)
    )
    assert isinstance(sensor(), dg.SkipReason)  # requested, on its way
    [requested] = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id]))
    asked = requested.create_timestamp.timestamp()
    assert not draining_ahead(
        instance, asked + START_PATIENCE.total_seconds() + 1, every_run_beats
    )  # stuck

    start = dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name="ingest_trades_job")
    instance.report_dagster_event(start, run_id=run.run_id)
    record_idle_cycle(db, run.run_id)  # its first look at the inbox
    assert isinstance(sensor(), dg.SkipReason)
    [record] = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id]))
    assert record.start_time is not None
    last_minute = record.start_time + DRAIN_SECONDS - HANDOVER.total_seconds()
    assert draining_ahead(instance, last_minute - 1, every_run_beats)
    # In its last minute the run's successor is asked for, so that it is up before the run ends.
    assert not draining_ahead(instance, last_minute + 1, every_run_beats)
    # A run that stopped beating went down (with its code server, say): no waiting for it.
    assert draining_ahead(instance, record.start_time + BEAT_PATIENCE - 1, lambda _: set())
    assert not draining_ahead(instance, record.start_time + BEAT_PATIENCE + 1, lambda _: set())


def test_a_drain_run_promotes_as_ticks_arrive_and_beats_while_idle(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    send(client, [tick(i) for i in range(3)])
    seen: list[PromotedBatch] = []
    with connect(database_url) as conn:
        for step in drain_continuously(conn, seconds=3, cadence=0.5):
            if not isinstance(step, PromotedBatch):
                continue  # an idle look
            seen.append(step)
            if len(seen) == 1:  # more ticks arrive while the drain runs
                send(client, [tick(i) for i in range(3, 5)])
    assert [b.promoted for b in seen] == [3, 2]
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (0,)
    batches = db.execute("SELECT inbox_rows FROM ingest_batches ORDER BY batch_id").fetchall()
    # Idle looks after them share one heartbeat row (none if the machine was very slow).
    assert batches in ([(3,), (2,)], [(3,), (2,), (0,)])


def test_a_micro_batch_run_records_the_candle_partitions_it_touched(
    client: httpx.Client, db: Connection, market_env: str, instance: dg.DagsterInstance
) -> None:
    send(client, [tick(1, ts="2026-11-19T23:59:59Z"), tick(2)])
    result = defs().resolve_job_def("ingest_trades_job").execute_in_process(instance=instance)
    assert result.success
    events = result.asset_materializations_for_node("trades")
    [batch] = [e for e in events if e.asset_key == dg.AssetKey("trades")]  # one per micro-batch
    assert batch.metadata["promoted"] == dg.IntMetadataValue(2)
    for key in CANDLE_KEYS:
        for day in ("2026-11-19", "2026-11-20"):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day]), limit=1
            ).records
            assert len(records) == 1, (key, day)
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (0,)
    assert_candles_match_trades(db)


def test_a_drain_over_a_quiet_market_keeps_trades_and_todays_candles_fresh(
    db: Connection, market_env: str, instance: dg.DagsterInstance
) -> None:
    quiet = {"drain_seconds": 3.0, "cadence_seconds": 0.5, "idle_report_seconds": 1.0}
    result = (
        defs()
        .resolve_job_def("ingest_trades_job")
        .execute_in_process(instance=instance, run_config={"ops": {"trades": {"config": quiet}}})
    )
    assert result.success
    reports = result.asset_materializations_for_node("trades")
    idle_trades = [e for e in reports if e.asset_key == dg.AssetKey("trades")]
    assert idle_trades, "the idle drain reported trades current"
    assert all(e.metadata["idle"] == dg.BoolMetadataValue(True) for e in idle_trades)
    today = datetime.now(UTC).date().isoformat()
    for key in CANDLE_KEYS:
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[today]), limit=1
        ).records
        assert record.asset_materialization is not None
        assert record.asset_materialization.metadata["promoted"] == dg.IntMetadataValue(0)
    # Freshness in Dagster's terms: the latest materialization of `trades` is this drain's.
    latest = instance.get_latest_materialization_event(dg.AssetKey("trades"))
    assert latest is not None and latest.run_id == result.run_id


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
    assert len(evaluations) == 2 * len(INTERVALS) + 1  # and the lake's matches_database
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


def test_the_lake_refreshes_today_every_five_minutes(market_env: str) -> None:
    loaded = defs()
    schedule = loaded.resolve_schedule_def("lake_today_schedule")
    assert schedule.cron_schedule == "*/5 * * * *"
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 2, 14, 35, tzinfo=UTC),
        repository_def=loaded.get_repository_def(),
    )
    [request] = schedule.evaluate_tick(context).run_requests or []
    assert (request.partition_key, request.tags["lake"]) == ("2026-03-02", "today")
    [lake] = [
        s for s in loaded.resolve_all_asset_specs() if s.key.to_user_string() == "candles_lake"
    ]
    assert lake.freshness_policy is not None


def test_finalization_after_midnight_targets_yesterday(market_env: str) -> None:
    loaded = defs()
    schedule = loaded.resolve_schedule_def("finalize_yesterday_schedule")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 2, 0, 10, tzinfo=UTC),
        repository_def=loaded.get_repository_def(),
    )
    data = schedule.evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests or []] == ["2026-03-01"]
