"""What the WebSocket endpoints (`/stocks`, `/ws`) share: a connection counted among the open
streams while it lasts, and served by a few jobs (send, listen, …) until the first of them ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from serving.metrics import STREAMS, STREAMS_ENDED


@dataclass
class Ending:
    reason: str = "client"  # why the connection ended, as mdp_streams_ended_total counts it


@contextlib.asynccontextmanager
async def counted(websocket: WebSocket) -> AsyncIterator[Ending]:
    """The connection counted in mdp_stream_subscribers while inside; on the way out counted in
    mdp_streams_ended_total by the reason set on the `Ending`, and closed."""
    STREAMS.inc()
    ending = Ending()
    try:
        yield ending
    finally:
        STREAMS.dec()
        STREAMS_ENDED.labels(ending.reason).inc()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()


async def until_one_ends(*jobs: Coroutine[Any, Any, object]) -> bool:
    """Run `jobs` until the first ends, then cancel the others; whether anything failed other
    than the client going away."""
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    errors = [e for task in done if not task.cancelled() and (e := task.exception()) is not None]
    return any(not isinstance(e, WebSocketDisconnect | OSError) for e in errors)
