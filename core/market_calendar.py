"""The stock market's trading sessions (docs/design.md §7): which one a moment falls in, from the
ordinary weekday's hours and the day's exception (a holiday or an early close), both clock times
in the market's zone. The calendar itself is data (`market_hours`, `market_holidays`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from typing import Literal

Session = Literal["closed", "early", "regular", "late"]
"""Closed, extended hours before the regular session (`early`), the regular session, extended
hours after it (`late`)."""


@dataclass(frozen=True)
class TradingHours:
    """An ordinary weekday: extended hours from `early_open`, the regular session from
    `regular_open` to `regular_close`, extended hours again until `late_close`."""

    early_open: time
    regular_open: time
    regular_close: time
    late_close: time


@dataclass(frozen=True)
class SpecialDay:
    """A day that differs from an ordinary weekday: closed all day when `close_at` is None, else
    the regular session ends at `close_at` and extended hours at `late_close_at` (or as usual)."""

    name: str
    close_at: time | None
    late_close_at: time | None


def session_at(
    moment: datetime, zone: tzinfo, hours: TradingHours, special: SpecialDay | None
) -> Session:
    """The session at `moment` (aware); `special` is the exception of its day in `zone`, if any.
    Saturdays and Sundays are closed."""
    local = moment.astimezone(zone)
    if local.weekday() >= 5:
        return "closed"
    regular_close, late_close = hours.regular_close, hours.late_close
    if special is not None:
        if special.close_at is None:
            return "closed"
        regular_close = special.close_at
        late_close = special.late_close_at or hours.late_close
    clock = local.time()
    if clock < hours.early_open or clock >= late_close:
        return "closed"
    if clock < hours.regular_open:
        return "early"
    return "regular" if clock < regular_close else "late"
