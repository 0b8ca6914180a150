"""The candle intervals and the market's day (docs/design.md §5): one place for the pipelines and
the API."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Where intraday buckets are aligned, and epoch milliseconds and microseconds count from."""

Interval = Literal["1m", "5m", "15m", "1h", "1d"]
"""An interval's name, as the API's parameters and the `candles.interval` column have it."""

INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
"""Widths; every interval but `1d` is aligned to the epoch, `1d` is the market's day (its
`MARKET_TIMEZONE` midnight to midnight: 23 or 25 hours on a daylight-saving change)."""

LONGEST_MARKET_DAY = timedelta(hours=26)
"""A market day lasts at most this long: a daylight-saving change moves clocks two hours at most."""

# The years over which a zone's offsets must be whole hours: the span of trades the platform holds.
ZONE_CHECK_YEARS = (1970, 2100)


def candle_asset(interval: str) -> str:
    """The Dagster asset key of one interval's candles."""
    return f"candles_{interval}"


CANDLE_ASSETS = [candle_asset(interval) for interval in INTERVALS]


def market_zone_problem(name: str) -> str | None:
    """Why `name` cannot be the market's zone, or None: it must be a known IANA zone whose UTC
    offset is always a whole number of hours, so 1h buckets nest in market days."""
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"MARKET_TIMEZONE {name!r} is not a known time zone (e.g. America/New_York)"
    day = datetime(ZONE_CHECK_YEARS[0], 1, 1, 12, tzinfo=UTC)
    while day.year < ZONE_CHECK_YEARS[1]:
        offset = day.astimezone(zone).utcoffset()
        if offset is not None and offset % timedelta(hours=1):
            return (
                f"MARKET_TIMEZONE {name!r} is {offset} from UTC on {day.date()}: its offset must"
                " be a whole number of hours, so that 1h candles nest in the market's days"
            )
        day += timedelta(weeks=1)  # every zone keeps an offset for months at a time
    return None


def days_are_utc(zone: tzinfo) -> bool:
    """Whether the market's days are UTC's: 1d buckets are then a fixed day from the epoch, like
    the intraday ones."""
    return str(zone) in ("UTC", "Etc/UTC")


def market_midnight(day: date, zone: tzinfo = UTC) -> datetime:
    """When the market day `day` begins (in UTC)."""
    return datetime.combine(day, time(), zone).astimezone(UTC)


def day_window(day: date, zone: tzinfo = UTC) -> tuple[datetime, datetime]:
    """The market day `day` in `zone` as a half-open UTC range, from its midnight to the next:
    23 or 25 hours on a daylight-saving change."""
    return market_midnight(day, zone), market_midnight(day + timedelta(days=1), zone)


def market_date(moment: datetime, zone: tzinfo = UTC) -> date:
    """The market day `moment` falls in."""
    return moment.astimezone(zone).date()


def bucket_end(interval: str, start: datetime, zone: tzinfo = UTC) -> datetime:
    """When the `interval` bucket starting at `start` ends: the next bucket's start (a 1d bucket's
    at the next market midnight). OverflowError past the calendar's end."""
    if interval == "1d" and not days_are_utc(zone):
        return market_midnight(market_date(start, zone) + timedelta(days=1), zone)
    return start + INTERVALS[interval]


def bucket_starts(
    interval: str, start: datetime, end: datetime, zone: tzinfo = UTC, most: int = 10_000
) -> list[datetime]:
    """The starts of the first `most` buckets of `interval` that begin in [start, end), ascending:
    every bucket, whether it holds a candle or not (what gap filling walks)."""
    starts: list[datetime] = []
    try:
        if interval == "1d" and not days_are_utc(zone):
            moment = market_midnight(market_date(start, zone), zone)
            if moment < start:
                moment = bucket_end(interval, moment, zone)
        else:
            width = INTERVALS[interval]
            moment = EPOCH + -((EPOCH - start) // width) * width  # the first at or after start
        while moment < end and len(starts) < most:
            starts.append(moment)
            moment = bucket_end(interval, moment, zone)
    except OverflowError:  # the calendar ends before `end` or `most`
        pass
    return starts


def day_spans(days: list[date]) -> Iterator[tuple[date, date]]:
    """Contiguous runs of sorted days, as (first, last)."""
    first = last = days[0]
    for day in days[1:]:
        if day != last + timedelta(days=1):
            yield first, last
            first = day
        last = day
    yield first, last
