"""`GET /stocks` (WebSocket): Polygon/Massive's stocks streaming protocol, so the official
`massive` `WebSocketClient(feed="HOST:PORT", market="stocks", secure=False)` works unchanged.

On connect a `connected` status; then `{"action": "auth", "params": KEY}` (any key while
READ_API_KEYS is unset; `auth_failed` and the connection closed for a key not among them); then
`subscribe` / `unsubscribe` with `T.<symbol>` or `T.*`. Every frame is a JSON array of events:
`T` for each accepted trade (resends left out, as /stream does), `t` in epoch milliseconds, `q`
the acceptance order. Minute and second bars (`AM`, `A`) are not served yet: subscribing to them
is answered with an error status. A consumer that falls MAX_BEHIND frames behind is told
`slow_consumer` and disconnected, so it never slows the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from serving.deps import Services, services
from serving.metrics import STREAMS, STREAMS_ENDED
from serving.stream import Event, follow_events, heads

router = APIRouter(tags=["stream"])

MAX_BEHIND = 256  # frames queued for one consumer before it is disconnected
AUTH_SECONDS = 10.0
CHANNELS = {"T"}
NOT_YET = {"AM", "A", "Q"}


def _status(status: str, message: str) -> list[dict[str, str]]:
    return [{"ev": "status", "status": status, "message": message}]


def _trade(event: Event) -> dict[str, Any]:
    trade = json.loads(event.data)
    return {
        "ev": "T",
        "sym": trade["symbol"],
        "i": trade["event_id"],
        "p": trade["price"],
        "s": trade["volume"],
        "t": int(datetime.fromisoformat(trade["ts"]).timestamp() * 1000),
        "q": trade["seq"],
    }


class Subscriptions:
    """The channels one connection asked for: `T.AAPL`, `T.*`."""

    def __init__(self) -> None:
        self.channels: set[str] = set()

    def change(self, action: str, params: str) -> list[dict[str, str]]:
        replies = []
        for channel in filter(None, (p.strip() for p in params.split(","))):
            kind, _, symbol = channel.partition(".")
            if kind in NOT_YET:
                replies += _status("error", f"{kind} events are not available here yet: {channel}")
            elif kind not in CHANNELS or not symbol:
                replies += _status("error", f"unknown channel {channel!r}")
            elif action == "subscribe":
                self.channels.add(channel)
                replies += _status("success", f"subscribed to: {channel}")
            else:
                self.channels.discard(channel)
                replies += _status("success", f"unsubscribed to: {channel}")
        return replies

    def wants(self, kind: str, symbol: str) -> bool:
        return f"{kind}.*" in self.channels or f"{kind}.{symbol}" in self.channels


@router.websocket("/stocks")
async def stocks(websocket: WebSocket) -> None:
    shared = services(websocket.app)
    await websocket.accept()
    await websocket.send_json(_status("connected", "Connected Successfully"))
    try:
        async with asyncio.timeout(AUTH_SECONDS):
            auth = await websocket.receive_json()
    except (TimeoutError, WebSocketDisconnect, ValueError):
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1008)
        return
    keys = shared.settings.read_keys
    if not isinstance(auth, dict) or auth.get("action") != "auth":
        await websocket.send_json(_status("auth_failed", "authenticate first"))
        await websocket.close(code=1008)
        return
    if keys and auth.get("params") not in keys:
        await websocket.send_json(_status("auth_failed", "authentication failed"))
        await websocket.close(code=1008)
        return
    await websocket.send_json(_status("auth_success", "authenticated"))

    subscriptions = Subscriptions()
    frames: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(MAX_BEHIND)
    STREAMS.inc()
    reason = "client"
    tasks = [
        asyncio.create_task(_read_trades(shared, subscriptions, frames)),
        asyncio.create_task(_send(websocket, frames)),
        asyncio.create_task(_listen(websocket, subscriptions, frames)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        errors = [e for task in done if (e := task.exception()) is not None]
        if any(isinstance(e, _SlowConsumer) for e in errors):
            reason = "slow"
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await websocket.send_json(_status("slow_consumer", "too far behind"))
        elif any(not isinstance(e, WebSocketDisconnect) for e in errors):
            reason = "error"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        STREAMS.dec()
        STREAMS_ENDED.labels(reason).inc()
        with contextlib.suppress(RuntimeError):
            await websocket.close()


class _SlowConsumer(Exception):
    pass


async def _read_trades(
    shared: Services, subscriptions: Subscriptions, frames: asyncio.Queue[list[dict[str, Any]]]
) -> None:
    cursor = await heads(shared.pool)
    async for events in follow_events(shared.pool, shared.stream, cursor, None, {"trade"}):
        frame = [_trade(e) for e in events if subscriptions.wants("T", e.symbol)]
        if frame:
            try:
                frames.put_nowait(frame)
            except asyncio.QueueFull:
                raise _SlowConsumer from None


async def _send(websocket: WebSocket, frames: asyncio.Queue[list[dict[str, Any]]]) -> None:
    while True:
        await websocket.send_json(await frames.get())


async def _listen(
    websocket: WebSocket,
    subscriptions: Subscriptions,
    frames: asyncio.Queue[list[dict[str, Any]]],
) -> None:
    while True:
        message = await websocket.receive_json()
        action = message.get("action") if isinstance(message, dict) else None
        if action in ("subscribe", "unsubscribe") and isinstance(message.get("params"), str):
            replies = subscriptions.change(action, message["params"])
        else:
            replies = _status("error", "expected subscribe or unsubscribe with params")
        await frames.put(replies)
