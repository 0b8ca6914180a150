"""The ingestion micro-batch: `trade_inbox_sensor` launches `ingest_trades_job` whenever the inbox
holds acknowledged ticks; the run drains them into `trades` and refreshes the candles they touch,
and records which candle partitions changed so freshness and lineage follow the micro-batches."""

import json
import math
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from mdp.intervals import INTERVALS
from mdp.settings import get_settings
from pipelines.defs.candles import asset_name, daily_partitions
from pipelines.defs.resources import MarketDatabase
from pipelines.ingestion import DEFAULT_MAX_ROWS, drain_inbox, inbox_span, record_idle_cycle

# A micro-batch run is bounded (MAX_BATCHES transactions) and must end within RUN_TIMEOUT. A run
# whose worker was killed is failed by its code server; one that went down with its code server
# (a container restart, `dagster job execute` killed) stays STARTED until run monitoring fails it
# for outliving RUN_TIMEOUT, and the sensor stops waiting for it then. A run stopped anywhere
# loses nothing: each batch is one transaction, and two runs at once are safe (each batch holds
# the candles lock).
RUN_TIMEOUT = timedelta(seconds=60)
MAX_BATCHES = 8


class IngestConfig(dg.Config):
    max_rows: int = DEFAULT_MAX_ROWS
    """Inbox rows per transaction."""
    max_batches: int = MAX_BATCHES
    """Transactions per run; what is left waits for the next run, requested at once."""


@dg.asset(
    group_name="ingestion",
    kinds={"postgres"},
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=10), warn_window=timedelta(minutes=2)
    ),
    description="Canonical trades: acknowledged ticks promoted from `trade_inbox`, "
    "deduplicated on (source, event_id); table `trades`.",
)
def trades(
    context: dg.AssetExecutionContext, config: IngestConfig, market_db: MarketDatabase
) -> dg.MaterializeResult[None]:
    with market_db.connect() as conn:
        batches = drain_inbox(conn, config.max_rows, context.run.run_id, config.max_batches)
    days: Counter[date] = Counter()
    for batch in batches:
        for (_, day), count in batch.days.items():
            days[day] += count
    for day, count in sorted(days.items()):
        key = day.isoformat()
        if daily_partitions.has_partition_key(key):
            for interval in INTERVALS:
                context.log_event(
                    dg.AssetMaterialization(
                        asset_key=asset_name(interval),
                        partition=key,
                        metadata={"trades_added": count, "by": "ingest_trades_job"},
                    )
                )
    promoted = sum(b.promoted for b in batches)
    inbox_rows = sum(b.inbox_rows for b in batches)
    return dg.MaterializeResult(
        metadata={
            "batches": len(batches),
            "inbox_rows": inbox_rows,
            "promoted": promoted,
            "duplicates": inbox_rows - promoted,
            "days_touched": ", ".join(sorted(d.isoformat() for d in days)) or "none",
            "candles_written": sum(n for b in batches for n in b.candles.values()),
        }
    )


ingest_trades_job = dg.define_asset_job(
    "ingest_trades_job",
    selection=[trades],
    description="One micro-batch: drain the inbox into `trades`, refresh the touched candles.",
    tags={"batch": "micro", "dagster/max_runtime": str(int(RUN_TIMEOUT.total_seconds()))},
)


def _in_flight(instance: dg.DagsterInstance) -> bool:
    recent = datetime.now(UTC) - RUN_TIMEOUT
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=ingest_trades_job.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
            created_after=recent,
        ),
        limit=1,
    )
    return bool(runs)


@dg.sensor(
    job=ingest_trades_job,
    minimum_interval_seconds=math.ceil(get_settings().ingestion_interval_seconds),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a micro-batch when the inbox holds ticks; an empty look still moves "
    "the ingestion heartbeat.",
)
def trade_inbox_sensor(
    context: dg.SensorEvaluationContext, market_db: MarketDatabase
) -> dg.SensorResult | dg.SkipReason:
    if _in_flight(context.instance):
        return dg.SkipReason("a micro-batch is still in flight")
    with market_db.connect() as conn:
        span = inbox_span(conn)
        if span is None:
            record_idle_cycle(conn)
            return dg.SkipReason("the inbox is empty")
    # One run key per pending range. The same range seen again with no run in flight means its
    # run ended without draining it (failed or killed): ask again under a new attempt number.
    pending = f"inbox-{span[0]}-{span[1]}"
    previous = json.loads(context.cursor) if context.cursor else {}
    attempt = previous.get("attempt", 0) + 1 if previous.get("pending") == pending else 0
    run_key = pending if attempt == 0 else f"{pending}-retry-{attempt}"
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key)],
        cursor=json.dumps({"pending": pending, "attempt": attempt}),
    )
