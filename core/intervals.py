"""The candle intervals (docs/design.md §5): one place for the pipelines and the API."""

from datetime import timedelta
from typing import Literal

Interval = Literal["1m", "5m", "15m", "1h", "1d"]
"""An interval's name, as the API's parameters and the `candles.interval` column have it."""

INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


def candle_asset(interval: str) -> str:
    """The Dagster asset key of one interval's candles."""
    return f"candles_{interval}"


CANDLE_ASSETS = [candle_asset(interval) for interval in INTERVALS]
