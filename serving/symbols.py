"""The registered symbols, cached in the API process and re-read when an unknown one shows up."""

from __future__ import annotations

import time

from psycopg_pool import AsyncConnectionPool

REFRESH_AT_MOST_EVERY_SECONDS = 2.0


class SymbolRegistry:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._symbols: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")

    @property
    def symbols(self) -> frozenset[str]:
        return self._symbols

    async def refresh(self) -> bool:
        """Re-read the symbols unless that happened moments ago; True when it did."""
        if time.monotonic() - self._loaded_at < REFRESH_AT_MOST_EVERY_SECONDS:
            return False
        async with self._pool.connection() as conn:
            rows = await (await conn.execute("SELECT symbol FROM symbols")).fetchall()
        self._symbols = frozenset(r[0] for r in rows)
        self._loaded_at = time.monotonic()
        return True
