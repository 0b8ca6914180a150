"""Gap filling for `/candles?fill=` (as TimescaleDB's `time_bucket_gapfill` with `locf`, or
QuestDB's `FILL(PREV)` and `FILL(NULL)`): every bucket of a page is sent, the empty ones added,
flagged `filled` and never stored. `previous` repeats the last close known before the bucket
(of a candle on this page, or the close the caller read from before the page) as open, high, low
and close, with no volume; `null` leaves the prices null. A bucket with no earlier close known
has null prices under either (docs/design.md §5)."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Literal

from core.intervals import bucket_end
from serving.candle_cache import Candle

Fill = Literal["none", "previous", "null"]


def label(start: datetime) -> str:
    """A bucket's start as candles carry it (`2026-11-20T14:30:00Z`)."""
    return start.isoformat().replace("+00:00", "Z")


def fill_gaps(
    candles: list[Candle],
    starts: list[datetime],
    fill: Fill,
    prior_close: float | None,
    interval: str,
    zone: tzinfo,
    now: datetime,
) -> list[Candle]:
    """`candles` (a page's real ones, ascending) with a filled candle in each of the bucket
    `starts` that has none; real candles are flagged `filled: false`. A filled bucket is final
    once it has closed: had a trade been pending in it, it would have a candle."""
    real = {candle.bucket_start: candle for candle in candles}
    gaps = {label(start): start for start in starts if label(start) not in real}
    close = prior_close
    page = []
    for key in sorted([*real, *gaps]):  # labels sort as times do
        if key in real:
            candle = real[key]
            candle.filled = False
            close = close if candle.close is None else candle.close
        else:
            price = close if fill == "previous" else None
            closed = _closed(interval, gaps[key], zone, now)
            candle = Candle(key, price, price, price, price, 0.0, None, 0, 0, closed, filled=True)
        page.append(candle)
    return page


def _closed(interval: str, start: datetime, zone: tzinfo, now: datetime) -> bool:
    try:
        return bucket_end(interval, start, zone) <= now
    except OverflowError:  # the calendar's last bucket never closes
        return False
