"""Continuous ingestion: `trade_inbox_sensor` keeps one `ingest_trades_job` run draining the inbox,
a micro-batch every second, into `trades`, refreshing the candles each batch touches. Every batch
is recorded as a materialization of `trades`, and the candle partitions the batches changed as
materializations of the candle assets, so freshness and lineage follow the micro-batches.

A run drains for DRAIN_SECONDS and ends; the sensor starts its successor HANDOVER before that, so
the two overlap briefly instead of leaving a gap while the new run's process starts (two drains at
once are safe: each batch holds the candles lock). A run stopped anywhere loses nothing: each batch
is one transaction. A run that went down with its code server stays STARTED until run monitoring
fails it for outliving its `dagster/max_runtime`; the sensor stops counting on it long before.
"""

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from core.config import get_settings
from core.intervals import INTERVALS, candle_asset, market_date
from pipelines.defs.partitions import daily_partitions
from pipelines.defs.resources import MarketDatabase
from pipelines.ingestion import (
    DEFAULT_MAX_ROWS,
    IdleLook,
    PromotedBatch,
    beating,
    drain_continuously,
)
from pipelines.names import INGEST_JOB, TRADES

DRAIN_SECONDS = 480.0
HANDOVER = timedelta(seconds=60)
CANDLE_EVENTS_SECONDS = 10.0
START_PATIENCE = timedelta(seconds=120)
BEAT_PATIENCE = 30.0
"""A drain run that recorded no batch nor idle cycle for this long is taken for dead."""
"""How long a requested run may take to start before the sensor asks for another."""
RUN_TIMEOUT = timedelta(seconds=DRAIN_SECONDS) + HANDOVER + START_PATIENCE


class IngestConfig(dg.Config):
    drain_seconds: float = 0.0
    """Keep draining, a micro-batch every `cadence_seconds`, for this long; 0 drains what is
    pending and ends (`dagster job execute`). The sensor's runs drain for DRAIN_SECONDS."""
    cadence_seconds: float = 1.0
    """Seconds between the starts of two drains of the inbox."""
    max_rows: int = DEFAULT_MAX_ROWS
    """Inbox rows per transaction; a larger backlog is drained in several."""
    idle_report_seconds: float = 60.0
    """While nothing arrives, report `trades` and today's candles current this often, so that
    their freshness in Dagster fails when the drains stop looking, not when the market is quiet."""


@dg.asset(
    name=TRADES,
    group_name="ingestion",
    kinds={"postgres"},
    output_required=False,
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=10), warn_window=timedelta(minutes=2)
    ),
    description="Canonical trades: acknowledged ticks promoted from `trade_inbox`, "
    "deduplicated on (source, event_id); table `trades`.",
)
def trades(
    context: dg.AssetExecutionContext, config: IngestConfig, market_db: MarketDatabase
) -> Iterator[dg.AssetMaterialization]:
    candles = _CandlePartitions()
    reported = time.monotonic()
    with market_db.connect() as conn:
        for batch in drain_continuously(
            conn, config.drain_seconds, config.cadence_seconds, config.max_rows, context.run.run_id
        ):
            if isinstance(batch, IdleLook):
                if time.monotonic() - reported >= config.idle_report_seconds:
                    yield from _idle_report()
                    reported = time.monotonic()
                continue
            reported = time.monotonic()
            yield dg.AssetMaterialization(
                asset_key=TRADES,
                metadata={
                    "batch_id": batch.batch_id,
                    "inbox_rows": batch.inbox_rows,
                    "promoted": batch.promoted,
                    "duplicates": batch.duplicates,
                    "candles_written": batch.candles,
                },
            )
            candles.add(batch)
            if candles.due():
                yield from candles.flush()
    yield from candles.flush()


def _idle_report() -> Iterator[dg.AssetMaterialization]:
    """`trades` and today's candles of every interval are current: the drain looked and found
    nothing new (a quiet market, not a stuck pipeline)."""
    idle = {"idle": True, "promoted": 0}
    yield dg.AssetMaterialization(asset_key=TRADES, metadata=idle)
    today = market_date(datetime.now(UTC), get_settings().market_zone).isoformat()
    if daily_partitions.has_partition_key(today):
        for interval in INTERVALS:
            yield dg.AssetMaterialization(
                asset_key=candle_asset(interval), partition=today, metadata=idle
            )


class _CandlePartitions:
    """The candle partitions (days) the batches changed, recorded as materializations of every
    candle asset at most every CANDLE_EVENTS_SECONDS: a write to Dagster's event log per interval
    and day is what a batch costs Dagster most, and freshness is judged in minutes."""

    def __init__(self) -> None:
        self.trades: Counter[date] = Counter()
        self.batches: list[int] = []
        self.since = time.monotonic()

    def add(self, batch: PromotedBatch) -> None:
        for (_, day), count in batch.days.items():
            self.trades[day] += count
        self.batches.append(batch.batch_id)

    def due(self) -> bool:
        return time.monotonic() - self.since >= CANDLE_EVENTS_SECONDS

    def flush(self) -> Iterator[dg.AssetMaterialization]:
        for day, count in sorted(self.trades.items()):
            if daily_partitions.has_partition_key(day.isoformat()):
                for interval in INTERVALS:
                    yield dg.AssetMaterialization(
                        asset_key=candle_asset(interval),
                        partition=day.isoformat(),
                        metadata={
                            "trades_added": count,
                            "batches": f"{self.batches[0]}-{self.batches[-1]}",
                        },
                    )
        self.trades.clear()
        self.batches.clear()
        self.since = time.monotonic()


ingest_trades_job = dg.define_asset_job(
    INGEST_JOB,
    selection=[trades],
    description="Drain the inbox into `trades` and refresh the touched candles: what is pending, "
    "or (as the sensor runs it) a micro-batch every second for a few minutes.",
    tags={"batch": "micro", "dagster/max_runtime": str(int(RUN_TIMEOUT.total_seconds()))},
)

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def draining_ahead(
    instance: dg.DagsterInstance, now: float, beating: Callable[[list[str]], set[str]]
) -> bool:
    """Whether a drain run will still be draining HANDOVER from `now` (epoch seconds): one that
    started less than DRAIN_SECONDS - HANDOVER ago and is alive (it beat in the last
    BEAT_PATIENCE, or has only just started), or one requested recently that has not started.
    `beating(run_ids)` tells which runs beat; a run whose worker died with its code server still
    looks STARTED to Dagster until run monitoring fails it."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=ingest_trades_job.name, statuses=IN_FLIGHT), limit=10
    )
    started = {r.dagster_run.run_id: r.start_time for r in records if r.start_time is not None}
    alive = beating(list(started)) if started else set()
    for record in records:
        if record.start_time is None:
            if now - record.create_timestamp.timestamp() < START_PATIENCE.total_seconds():
                return True
        elif record.start_time + DRAIN_SECONDS - now > HANDOVER.total_seconds() and (
            record.dagster_run.run_id in alive or now - record.start_time < BEAT_PATIENCE
        ):
            return True
    return False


@dg.sensor(
    job=ingest_trades_job,
    minimum_interval_seconds=min(10, max(1, round(get_settings().ingestion_interval_seconds))),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps one drain run of `ingest_trades_job` going, and starts the next before "
    "it ends (or at once when the one draining stopped beating).",
)
def trade_inbox_sensor(
    context: dg.SensorEvaluationContext, market_db: MarketDatabase
) -> dg.SensorResult | dg.SkipReason:
    now = time.time()
    with market_db.connect() as conn:
        ahead = draining_ahead(
            context.instance, now, lambda runs: beating(conn, runs, within=BEAT_PATIENCE)
        )
    if ahead:
        return dg.SkipReason("a drain run is draining")
    config = IngestConfig(drain_seconds=DRAIN_SECONDS)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drain-{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%S}",
                run_config=dg.RunConfig(ops={TRADES: config}),
            )
        ]
    )
