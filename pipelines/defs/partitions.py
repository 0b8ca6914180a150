"""The daily UTC partitions the candle assets and the lake share."""

import dagster as dg

from core.config import get_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().partitions_start_date.isoformat(),
    timezone="UTC",
    end_offset=1,  # today, still filling, is a partition too
)
