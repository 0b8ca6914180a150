"""Cancels (docs/design.md §4): trades marked cancelled by identity, and the candles they were in
restated, in one transaction under the candles lock, so a micro-batch never sees half of it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from psycopg_pool import AsyncConnectionPool

from core.db import LOCK_CANDLES, query
from core.intervals import INTERVALS

COARSER = [name for name in INTERVALS if name != "1m"]
Outcome = Literal["cancelled", "already_cancelled", "unknown"]


async def cancel_trades(
    pool: AsyncConnectionPool[Any], identities: list[tuple[str, str]]
) -> list[tuple[str, str, Outcome]]:
    """Cancel `identities` (source, event_id); each one's outcome, in the order asked (an
    identity asked again within the request is `already_cancelled` by the first)."""
    params = {
        "sources": [source for source, _ in identities],
        "event_ids": [event_id for _, event_id in identities],
        "at": datetime.now(UTC),
    }
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(LOCK_CANDLES)
        rows = await (await conn.execute(query("cancel_trades"), params)).fetchall()
        touched = [(symbol, ts) for _, _, _, symbol, ts in rows if symbol is not None]
        if touched:
            restate = {
                "symbols": [symbol for symbol, _ in touched],
                "times": [ts for _, ts in touched],
                "intervals": COARSER,
                "widths": [INTERVALS[name] for name in COARSER],
            }
            await conn.execute(query("restate_candles"), restate)
    return [(source, event_id, outcome) for source, event_id, outcome, _, _ in rows]
