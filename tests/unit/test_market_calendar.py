"""The trading sessions of a moment: the ordinary weekday's hours, holidays and early closes, as
clock times in the market's zone (New York's here, across a daylight-saving change)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from core.market_calendar import Session, SpecialDay, TradingHours, session_at

NEW_YORK = ZoneInfo("America/New_York")
HOURS = TradingHours(time(4), time(9, 30), time(16), time(20))
THANKSGIVING = SpecialDay("Thanksgiving Day", None, None)
DAY_AFTER = SpecialDay("Day after Thanksgiving", time(13), time(17))


@pytest.mark.parametrize(
    ("utc", "special", "session"),
    [
        ("2026-12-07T08:59:59", None, "closed"),  # Monday 03:59:59 in New York (EST, -5)
        ("2026-12-07T09:00:00", None, "early"),
        ("2026-12-07T14:29:59", None, "early"),
        ("2026-12-07T14:30:00", None, "regular"),
        ("2026-12-07T20:59:59", None, "regular"),
        ("2026-12-07T21:00:00", None, "late"),
        ("2026-12-08T00:59:59", None, "late"),
        ("2026-12-08T01:00:00", None, "closed"),
        ("2026-07-07T13:30:00", None, "regular"),  # 09:30 in summer (EDT, -4)
        ("2026-07-07T13:29:59", None, "early"),
        ("2026-07-07T20:00:00", None, "late"),
        ("2026-12-05T15:00:00", None, "closed"),  # Saturday
        ("2026-12-06T15:00:00", None, "closed"),  # Sunday
        ("2026-11-26T15:00:00", THANKSGIVING, "closed"),
        ("2026-11-27T17:59:59", DAY_AFTER, "regular"),  # 12:59:59
        ("2026-11-27T18:00:00", DAY_AFTER, "late"),  # 13:00, the early close
        ("2026-11-27T21:59:59", DAY_AFTER, "late"),
        ("2026-11-27T22:00:00", DAY_AFTER, "closed"),  # 17:00, late trading ends early too
        ("2026-11-27T10:00:00", DAY_AFTER, "early"),
    ],
)
def test_the_session_of_a_moment(utc: str, special: SpecialDay | None, session: Session) -> None:
    moment = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert session_at(moment, NEW_YORK, HOURS, special) == session


def test_an_early_close_without_its_own_late_close_keeps_the_ordinary_one() -> None:
    short = SpecialDay("Short day", time(13), None)
    evening = datetime(2026, 12, 24, 19, 30, tzinfo=NEW_YORK)
    assert session_at(evening, NEW_YORK, HOURS, short) == "late"
