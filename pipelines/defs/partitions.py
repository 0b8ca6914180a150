"""The market's days and clock, which the candle assets, the lake and the schedules share: daily
partitions are the market's days, in MARKET_TIMEZONE (docs/design.md §5), and every schedule is
defined the one way (`running_schedule`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import dagster as dg

from core.config import get_settings

if TYPE_CHECKING:  # what `define_asset_job` returns; Dagster exports no public name for it
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().partitions_start_date.isoformat(),
    timezone=get_settings().market_timezone,
    end_offset=1,  # today, still filling, is a partition too
)


def running_schedule(
    name: str,
    job: UnresolvedAssetJobDefinition | dg.JobDefinition,
    cron_schedule: str,
    description: str,
    *,
    timezone: str | None = None,
    request: Callable[[datetime], dg.RunRequest] | None = None,
) -> dg.ScheduleDefinition:
    """A schedule that runs from the start, on the market's clock unless `timezone` says another;
    `request` makes each run from the scheduled moment in the market's zone (a plain run of `job`
    without it)."""
    evaluate = None
    if request is not None:

        def evaluate(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
            return request(context.scheduled_execution_time.astimezone(get_settings().market_zone))

    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=timezone or get_settings().market_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
        execution_fn=evaluate,
    )
