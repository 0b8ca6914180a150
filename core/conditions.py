"""Sale conditions (docs/design.md §5): the codes a trade may carry and which fields of a candle
they let it update. The table itself is data, shipped by a migration (`trade_conditions`); this
is how a trade's codes become its three rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple


class Rules(NamedTuple):
    """Whether a trade may set a candle's high and low, its open and close, and count in its
    volume (with VWAP and trade count)."""

    high_low: bool = True
    open_close: bool = True
    volume: bool = True


REGULAR = Rules()

# A condition's rules; None for a condition that only flags a state and restricts nothing.
ConditionRules = Mapping[int, Rules | None]

SELECT_RULES = (
    "SELECT id, updates_high_low, updates_open_close, updates_volume FROM trade_conditions"
)


def rules_table(
    rows: Iterable[tuple[int, bool | None, bool | None, bool | None]],
) -> dict[int, Rules | None]:
    """The rules by code, from rows of SELECT_RULES."""
    return {
        code: None if high_low is None else Rules(bool(high_low), bool(open_close), bool(volume))
        for code, high_low, open_close, volume in rows
    }


def rules_of(codes: Iterable[int], table: ConditionRules) -> Rules:
    """A trade's rules: a field updates only when none of its conditions forbids it (the most
    restrictive wins). Every code must be in `table`."""
    high_low = open_close = volume = True
    for code in codes:
        rules = table[code]
        if rules is not None:
            high_low &= rules.high_low
            open_close &= rules.open_close
            volume &= rules.volume
    return Rules(high_low, open_close, volume)
