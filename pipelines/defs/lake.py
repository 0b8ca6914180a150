"""`candles_lake`: each day's candles and trades as Parquet for analysts (DuckDB). Today is
exported every 5 minutes (`lake_today_schedule`), yesterday by the nightly finalization (same job),
and any earlier day PostgreSQL changes after it was exported (late trades, cancels, imports,
backfills) again within the lake's freshness window (`candles_lake_sensor`). The check
`matches_database` compares each exported day's counts and sums with PostgreSQL's."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from core.config import get_settings
from core.intervals import CANDLE_ASSETS, day_spans, market_date
from pipelines.defs.partitions import daily_partitions, running_schedule
from pipelines.defs.resources import MarketDatabase
from pipelines.lake import (
    check_day,
    export_day,
    exported_days,
    refresh_database_file,
    stale_days,
)
from pipelines.names import FINALIZE_JOB, LAKE, LAKE_JOB, LAKE_TODAY_TAG

LAKE_FOLLOW_TAG = {"lake": "follows"}
"""Tags the runs that export days PostgreSQL changed after their export."""
FOLLOW_MAX_RUNTIME = {"dagster/max_runtime": "3600"}
"""A follow run whose worker died is failed after an hour (not the instance's six), so the sensor
stops counting on it and asks again."""


@dg.asset(
    name=LAKE,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=CANDLE_ASSETS,
    group_name="lake",
    kinds={"parquet", "duckdb"},
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=7)
    ),
    description="Candles of every interval and canonical trades per market day, as "
    "hive-partitioned Parquet under LAKE_DIR, with views in LAKE_DIR/lake.duckdb. Today is "
    "refreshed every 5 minutes.",
)
def candles_lake(
    context: dg.AssetExecutionContext, market_db: MarketDatabase
) -> dg.MaterializeResult[None]:
    lake = get_settings().lake_dir
    for key in context.partition_keys:
        exported = export_day(market_db.url, lake, date.fromisoformat(key))
        context.add_asset_metadata(
            {
                "candles": sum(exported.candles.values()),
                "trades": exported.trades,
                **{f"candles_{i}": n for i, n in exported.candles.items()},
            },
            partition_key=key,
        )
    database = refresh_database_file(lake)
    return dg.MaterializeResult(metadata={"duckdb_file": str(database.resolve())})


candles_lake_job = dg.define_asset_job(
    LAKE_JOB, selection=[candles_lake], description="Export days to the lake."
)


def _today_so_far(moment: datetime) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"today-{moment:%Y%m%dT%H%M}", partition_key=moment.date().isoformat(),
        tags=LAKE_TODAY_TAG,
    )  # fmt: skip


lake_today_schedule = running_schedule(
    "lake_today_schedule",
    candles_lake_job,
    "*/5 * * * *",
    "Every 5 minutes: export today so far, so analysts see the day while it trades "
    "(micro-batches go on meanwhile: the export only reads).",
    request=_today_so_far,
)


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def days_on_their_way(instance: dg.DagsterInstance) -> set[date]:
    """The days that lake exports not yet finished (queued or running) will export."""
    days: set[date] = set()
    for job in (LAKE_JOB, FINALIZE_JOB):
        for run in instance.get_runs(dg.RunsFilter(job_name=job, statuses=IN_FLIGHT)):
            tags = run.tags
            if "dagster/partition" in tags:
                days.add(date.fromisoformat(tags["dagster/partition"]))
            elif RANGE_START in tags and RANGE_END in tags:
                day, last = (
                    date.fromisoformat(tags[RANGE_START]),
                    date.fromisoformat(tags[RANGE_END]),
                )
                while day <= last:
                    days.add(day)
                    day += timedelta(days=1)
    return days


@dg.sensor(
    job=candles_lake_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Exports again every day before today that PostgreSQL changed after its export "
    "(late trades, cancels, imports, backfills: `lake_exports` counts the changes), within the "
    "lake's freshness window; today is `lake_today_schedule`'s.",
)
def candles_lake_sensor(
    context: dg.SensorEvaluationContext, market_db: MarketDatabase
) -> dg.SensorResult | dg.SkipReason:
    today = market_date(datetime.now(UTC), get_settings().market_zone)
    stale = [
        day
        for day in stale_days(market_db.url, before=today)
        if daily_partitions.has_partition_key(day.isoformat())
    ]
    # A day an export already on its way covers stays stale until that export ends; then a change
    # it missed (committed after its read began) still shows, and the next tick exports it.
    days = sorted(set(stale) - days_on_their_way(context.instance))
    if not days:
        return dg.SkipReason("the lake holds every day as PostgreSQL does")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                tags={
                    **LAKE_FOLLOW_TAG,
                    **FOLLOW_MAX_RUNTIME,
                    RANGE_START: first.isoformat(),
                    RANGE_END: last.isoformat(),
                },
            )
            for first, last in day_spans(days)
        ]
    )


@dg.asset_check(
    asset=candles_lake,
    name="matches_database",
    description="Each exported day's counts and sums in the lake (trades: rows, cancelled, volume, "
    "last seq; candles of every interval: rows, trade counts, volume, open, high, low, close) "
    "equal PostgreSQL's, and no day changed in PostgreSQL waits longer than 10 minutes for its "
    "export. In a lake run, the days it exported; on its own, every day the lake holds.",
)
def matches_database(
    context: dg.AssetCheckExecutionContext, market_db: MarketDatabase
) -> dg.AssetCheckResult:
    lake = get_settings().lake_dir
    if context.has_partition_key_range or context.has_partition_key:
        days = [date.fromisoformat(key) for key in context.partition_keys]
    else:
        days = exported_days(market_db.url, lake)
    checks = [check_day(market_db.url, lake, day) for day in days]
    differing = [c for c in checks if c.differences]
    overdue = [c.day for c in checks if c.state == "overdue"]
    described = [
        f"{c.day}: " + ", ".join(f"{key} {db:g} in the database, {held:g} in the lake"
                                 for key, (db, held) in list(c.differences.items())[:4])
        for c in differing[:10]
    ]  # fmt: skip
    described += [f"{day}: changed over 10 minutes ago, not exported since" for day in overdue[:10]]
    return dg.AssetCheckResult(
        passed=not differing and not overdue,
        metadata={
            "days_checked": len(days),
            "days_differing": len(differing),
            "days_overdue": len(overdue),
            "days_on_their_way": sum(c.state == "on_its_way" for c in checks),
        },
        description="\n".join(described) or None,
    )


candles_lake_check_job = dg.define_asset_job(
    "candles_lake_check_job",
    selection=dg.AssetSelection.checks(matches_database),
    description="The lake against the database, every day the lake holds.",
)

candles_lake_check_schedule = running_schedule(
    "candles_lake_check_schedule",
    candles_lake_check_job,
    "40 0 * * *",
    "Nightly, after the finalization: compare every day the lake holds with PostgreSQL (a scan "
    "of every day's trades; the runs that export check their own days).",
)
