"""`candles_lake`: each day's candles and trades as Parquet for analysts (DuckDB). It follows the
nightly finalization (same job) and every partition run of the candles (`candles_lake_sensor`)."""

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg

from core.config import get_settings
from core.intervals import CANDLE_ASSETS, candle_asset
from pipelines.defs.partitions import daily_partitions
from pipelines.defs.resources import MarketDatabase
from pipelines.lake import export_day, refresh_database_file
from pipelines.names import INGEST_JOB, LAKE, LAKE_JOB, LAKE_TODAY_TAG


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


@dg.schedule(
    job=candles_lake_job,
    cron_schedule="*/5 * * * *",
    execution_timezone=get_settings().market_timezone,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes: export today so far, so analysts see the day while it trades "
    "(micro-batches go on meanwhile: the export only reads).",
)
def lake_today_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    moment = context.scheduled_execution_time.astimezone(get_settings().market_zone)
    return dg.RunRequest(
        run_key=f"today-{moment:%Y%m%dT%H%M}", partition_key=moment.date().isoformat(),
        tags=LAKE_TODAY_TAG,
    )  # fmt: skip


def _ranges(days: list[date]) -> Iterator[tuple[date, date]]:
    """Contiguous runs of sorted days, as (first, last)."""
    first = last = days[0]
    for day in days[1:]:
        if day != last + timedelta(days=1):
            yield first, last
            first = day
        last = day
    yield first, last


@dg.sensor(
    job=candles_lake_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a partition run of the candles (a backfill, say), export those days; "
    "the days micro-batches touch wait for the nightly finalization.",
)
def candles_lake_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(candle_asset("1d")), after_storage_id=after),
        limit=1000,
        ascending=True,
    ).records
    if not records:
        return dg.SkipReason("no new candle materializations")
    micro_batches = {
        run.run_id
        for run in context.instance.get_runs(
            dg.RunsFilter(run_ids=list({r.run_id for r in records}), job_name=INGEST_JOB)
        )
    }
    days = sorted({
        date.fromisoformat(r.partition_key)
        for r in records
        if r.partition_key and r.run_id not in micro_batches
    })  # fmt: skip
    cursor = str(records[-1].storage_id)
    requests = [
        dg.RunRequest(
            run_key=f"lake-{first}-{last}-{cursor}",
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
            },
        )
        for first, last in (_ranges(days) if days else [])
    ]
    return dg.SensorResult(run_requests=requests, cursor=cursor)
