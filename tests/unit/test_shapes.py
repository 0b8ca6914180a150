"""Pure helpers of the read and import paths: how Polygon bars are built from stored intervals,
and how the days an import touched become backfill ranges."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from core.intervals import day_spans
from mdp.imports import day_ranges
from serving.routers.polygon import BarShape, bar_shape


@pytest.mark.parametrize(
    ("multiplier", "timespan", "shape"),
    [
        (1, "minute", BarShape("1m", "day", timedelta(minutes=1), 0)),
        (10, "minute", BarShape("5m", "day", timedelta(minutes=10), 0)),
        (45, "minute", BarShape("15m", "day", timedelta(minutes=45), 0)),
        (7, "minute", BarShape("1m", "day", timedelta(minutes=7), 0)),
        (4, "hour", BarShape("1h", "day", timedelta(hours=4), 0)),
        (2, "day", BarShape("1d", "epoch", timedelta(days=2), 0)),
        (1, "week", BarShape("1d", "monday", timedelta(weeks=1), 0)),
        (2, "quarter", BarShape("1d", "months", timedelta(0), 6)),
        (1, "year", BarShape("1d", "months", timedelta(0), 12)),
    ],
)
def test_bars_come_from_the_coarsest_interval_that_divides_them(
    multiplier: int, timespan: str, shape: BarShape
) -> None:
    assert bar_shape(multiplier, timespan) == shape


def test_days_group_into_contiguous_ranges() -> None:
    days = [date(2026, 1, d) for d in (5, 6, 7, 9, 12, 13)]
    assert list(day_spans(days)) == [
        (date(2026, 1, 5), date(2026, 1, 7)),
        (date(2026, 1, 9), date(2026, 1, 9)),
        (date(2026, 1, 12), date(2026, 1, 13)),
    ]
    assert day_ranges(days) == "2026-01-05…2026-01-07, 2026-01-09, 2026-01-12…2026-01-13"
