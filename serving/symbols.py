"""The registered symbols and sale conditions, cached in the API process and re-read when an
unknown one shows up."""

from __future__ import annotations

import time
from collections.abc import Collection

from psycopg_pool import AsyncConnectionPool

from core.conditions import SELECT_RULES, ConditionRules, rules_table
from core.ticks import SYMBOL

REFRESH_AT_MOST_EVERY_SECONDS = 2.0
SELECT_SOME = "SELECT symbol FROM symbols WHERE symbol = ANY(%s)"


class SymbolRegistry:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._symbols: frozenset[str] = frozenset()
        self._conditions: ConditionRules = {}
        self._loaded_at = float("-inf")

    @property
    def symbols(self) -> frozenset[str]:
        return self._symbols

    @property
    def conditions(self) -> ConditionRules:
        """The rules of every registered sale condition, by code."""
        return self._conditions

    async def refresh(self, names: Collection[str] = ()) -> bool:
        """Re-read symbols and conditions unless that happened moments ago; True when it did.
        In between, the symbols among `names` the cache does not know are looked up alone (True
        when one is registered): a symbol registered a moment ago is known at once, and a flood
        of unknown names costs a primary-key probe each, never a re-read of the whole table."""
        if time.monotonic() - self._loaded_at < REFRESH_AT_MOST_EVERY_SECONDS:
            # Only names that could be symbols are looked up (not a NUL byte or a surrogate).
            unknown = [n for n in names if n not in self._symbols and SYMBOL.fullmatch(n)]
            if not unknown:
                return False
            async with self._pool.connection() as conn:
                rows = await (await conn.execute(SELECT_SOME, [unknown])).fetchall()
            self._symbols |= {r[0] for r in rows}
            return bool(rows)
        async with self._pool.connection() as conn:
            rows = await (await conn.execute("SELECT symbol FROM symbols")).fetchall()
            conditions = await (await conn.execute(SELECT_RULES)).fetchall()
        self._symbols = frozenset(r[0] for r in rows)
        self._conditions = rules_table(conditions)
        self._loaded_at = time.monotonic()
        return True
