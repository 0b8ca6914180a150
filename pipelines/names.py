"""The names of the Dagster objects that other modules and the command line refer to, in one
place. Dagster-free, so the command line can use them without loading the code location."""

from core.intervals import CANDLE_ASSETS, candle_asset

CODE_LOCATION = "pipelines.definitions"
"""The code location: its module, and its name in workspace.yaml and in the Dagster UI."""

TRADES = "trades"
LAKE = "candles_lake"
ASSETS = [TRADES, *CANDLE_ASSETS, LAKE]
MINUTE_CANDLES = candle_asset("1m")

INGEST_JOB = "ingest_trades_job"
CANDLE_CHECKS_JOB = "candle_checks_job"
LAKE_JOB = "candles_lake_job"
FINALIZE_JOB = "finalize_candles_job"
PRUNE_JOB = "prune_run_history_job"

LAKE_TODAY_TAG = {"lake": "today"}
"""Tags the runs that export today so far (pruned after a day, unlike the other lake runs)."""
