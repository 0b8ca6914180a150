"""Daily finalization of yesterday's candles and the pruning that keeps Dagster's own storage
bounded (Dagster 1.13 purges sensor ticks by itself, never runs or their event logs)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from pipelines.defs.partitions import running_schedule
from pipelines.names import (
    CANDLE_CHECKS_JOB,
    FINALIZE_JOB,
    INGEST_JOB,
    LAKE_JOB,
    LAKE_TODAY_TAG,
    PRUNE_JOB,
)

# Micro-batch and maintenance runs are many and only recent ones help an operator; backfills and
# finalizations are few and kept for a quarter.
FREQUENT_RUN_RETENTION = timedelta(hours=24)
RUN_RETENTION = timedelta(days=90)
FINISHED = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]

finalize_candles_job = dg.define_asset_job(
    FINALIZE_JOB,
    selection=dg.AssetSelection.groups("candles", "lake"),
    description="Recompute one day of every candle interval from `trades`, run the checks and "
    "export the day to the lake.",
)


def _yesterday(moment: datetime) -> dg.RunRequest:
    yesterday = moment.date() - timedelta(days=1)
    return dg.RunRequest(run_key=yesterday.isoformat(), partition_key=yesterday.isoformat())


finalize_yesterday_schedule = running_schedule(
    "finalize_yesterday_schedule",
    finalize_candles_job,
    "10 0 * * *",
    "Shortly after the market's midnight: recompute, check and export the market's yesterday.",
    request=_yesterday,
)


def prune_runs(instance: dg.DagsterInstance, now: datetime) -> int:
    """Delete finished runs (and their event logs) past retention; returns how many."""
    frequent = [INGEST_JOB, CANDLE_CHECKS_JOB, PRUNE_JOB]
    rules = [
        dg.RunsFilter(job_name=name, statuses=FINISHED, updated_before=now - FREQUENT_RUN_RETENTION)
        for name in frequent
    ]
    rules.append(  # today's lake refreshes
        dg.RunsFilter(
            job_name=LAKE_JOB,
            tags=LAKE_TODAY_TAG,
            statuses=FINISHED,
            updated_before=now - FREQUENT_RUN_RETENTION,
        )
    )
    rules.append(dg.RunsFilter(statuses=FINISHED, updated_before=now - RUN_RETENTION))
    deleted = 0
    for rule in rules:
        while records := instance.get_run_records(filters=rule, limit=500):
            for record in records:
                instance.delete_run(record.dagster_run.run_id)
            deleted += len(records)
    return deleted


@dg.op
def prune_run_history(context: dg.OpExecutionContext) -> None:
    deleted = prune_runs(context.instance, datetime.now(UTC))
    context.log.info(f"deleted {deleted} finished runs past retention")


@dg.job(
    name=PRUNE_JOB,
    description="Delete finished Dagster runs past retention, with their event logs.",
)
def prune_run_history_job() -> None:
    prune_run_history()


prune_run_history_schedule = running_schedule(
    "prune_run_history_schedule",
    prune_run_history_job,
    "17 * * * *",
    "Hourly: keep Dagster's run and event history bounded.",
    timezone="UTC",
)
