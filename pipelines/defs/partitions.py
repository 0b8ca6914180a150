"""The daily partitions the candle assets and the lake share: the market's days, in
MARKET_TIMEZONE (docs/design.md §5)."""

import dagster as dg

from core.config import get_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().partitions_start_date.isoformat(),
    timezone=get_settings().market_timezone,
    end_offset=1,  # today, still filling, is a partition too
)
