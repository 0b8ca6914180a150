"""Stored candles against the same candles computed by PostgreSQL SQL over `trades`."""

from __future__ import annotations

from core.db import Connection
from mdp.reconcile import candle_differences
from mdp.reconcile import reference_candles as reference

__all__ = ["assert_candles_match_trades", "reference"]


def assert_candles_match_trades(db: Connection) -> None:
    """Every interval: the same buckets, identical open/high/low/close, trade counts and times of
    the first and last trade; volume and vwap equal up to floating-point summation order."""
    differences = candle_differences(db)
    assert differences == [], differences[:5]
