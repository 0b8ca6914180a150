"""Candle assets `candles_1m` … `candles_1d`: daily partitions (the market's days), recomputed
with Polars and replaced in PostgreSQL a whole day at a time; with freshness policies and asset
checks.

Micro-batches keep today's buckets current between these runs (see `defs/ingestion.py`); a
partition run is the backfill and the end-of-day finalization."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from core.config import get_settings
from core.db import query
from core.intervals import INTERVALS, candle_asset, day_window, market_date
from pipelines.candles import recompute_day
from pipelines.defs.partitions import daily_partitions, running_schedule
from pipelines.defs.resources import MarketDatabase
from pipelines.names import CANDLE_CHECKS_JOB, MINUTE_CANDLES, TRADES

# Micro-batches report candle materializations every few seconds while trades flow.
CANDLES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=10), warn_window=timedelta(minutes=2)
)


def _spec(interval: str) -> dg.AssetSpec:
    source = TRADES if interval == "1m" else MINUTE_CANDLES
    return dg.AssetSpec(
        candle_asset(interval),
        deps=[source],
        partitions_def=daily_partitions,
        group_name="candles",
        kinds={"polars", "postgres"},
        freshness_policy=CANDLES_FRESHNESS,
        description=f"{interval} OHLCV candles per symbol, from `{source}`; table `candles`.",
        skippable=True,
    )


@dg.multi_asset(
    name="candles",
    specs=[_spec(interval) for interval in INTERVALS],
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def candles(
    context: dg.AssetExecutionContext, market_db: MarketDatabase
) -> Iterator[dg.MaterializeResult[None]]:
    """One step per run: each day's trades are read once, 1m candles computed from them and the
    coarser intervals rolled up in memory, then the day is replaced in one transaction."""
    selected = [i for i in INTERVALS if dg.AssetKey(candle_asset(i)) in context.selected_asset_keys]
    with market_db.connect() as conn:
        for key in context.partition_keys:
            for day in recompute_day(conn, market_db.url, date.fromisoformat(key), selected):
                context.add_asset_metadata(
                    {
                        "dagster/partition_row_count": day.candles,
                        "trades": day.trades,
                        "first_bucket": _iso(day.first_bucket),
                        "last_bucket": _iso(day.last_bucket),
                    },
                    asset_key=candle_asset(day.interval),
                    partition_key=key,
                )
    for interval in selected:
        yield dg.MaterializeResult(asset_key=candle_asset(interval))


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "none"


def _checked_window(context: dg.AssetCheckExecutionContext) -> tuple[datetime, datetime]:
    """The days of the run's partitions; without partitions (a check run on its own from the UI),
    yesterday and today."""
    if context.has_partition_key_range or context.has_partition_key:
        window = context.partition_time_window
        return window.start.astimezone(UTC), window.end.astimezone(UTC)
    zone = get_settings().market_zone
    today = market_date(datetime.now(UTC), zone)
    return day_window(today - timedelta(days=1), zone)[0], day_window(today, zone)[1]


def _describe(rows: list[tuple[Any, ...]], limit: int = 5) -> str:
    return "\n".join(" ".join(str(v) for v in row) for row in rows[:limit])


def _offending_rows(
    context: dg.AssetCheckExecutionContext,
    market_db: MarketDatabase,
    interval: str,
    query_name: str,
    label: str,
) -> dg.AssetCheckResult:
    """Run `sql/queries/<query_name>.sql` over the checked window; it passes when no row comes
    back, and the first rows describe the failure."""
    start, end = _checked_window(context)
    params = {"interval": interval, "start": start, "end": end}
    with market_db.connect() as conn:
        rows = conn.execute(query(query_name), params).fetchall()
    return dg.AssetCheckResult(
        passed=not rows,
        metadata={label: len(rows), "window": f"{start:%F} … {end:%F}"},
        description=_describe(rows) or None,
    )


def candle_checks(interval: str) -> list[dg.AssetChecksDefinition]:
    name = candle_asset(interval)

    @dg.asset_check(
        asset=name,
        name="ohlc_invariants",
        blocking=True,
        description="low ≤ open, close ≤ high; volume > 0; trade_count ≥ 1.",
    )
    def ohlc_invariants(
        context: dg.AssetCheckExecutionContext, market_db: MarketDatabase
    ) -> dg.AssetCheckResult:
        return _offending_rows(context, market_db, interval, "candle_violations", "violations")

    @dg.asset_check(
        asset=name,
        name="reconciles_with_trades",
        description="Per day and symbol, candle volume and trade count equal those of `trades`.",
    )
    def reconciles_with_trades(
        context: dg.AssetCheckExecutionContext, market_db: MarketDatabase
    ) -> dg.AssetCheckResult:
        return _offending_rows(context, market_db, interval, "reconcile_candles", "mismatched_days")

    return [ohlc_invariants, reconciles_with_trades]


candle_asset_checks = [check for interval in INTERVALS for check in candle_checks(interval)]


candle_checks_job = dg.define_asset_job(
    CANDLE_CHECKS_JOB,
    selection=dg.AssetSelection.checks_for_assets(candles),
    description="The candle checks alone, over yesterday and today.",
)

candle_checks_schedule = running_schedule(
    "candle_checks_schedule",
    candle_checks_job,
    "*/15 * * * *",
    "Every 15 minutes: keep the check results of the filling day current.",
    timezone="UTC",
)
