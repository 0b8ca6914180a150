"""`GET /stocks` (WebSocket): Polygon/Massive's stocks streaming protocol, so the official
`massive` `WebSocketClient(feed="HOST:PORT", market="stocks", secure=False)` works unchanged.

On connect a `connected` status; then `{"action": "auth", "params": KEY}` (any key while
READ_API_KEYS is unset; `auth_failed` and the connection closed for a key not among them); then
`subscribe` / `unsubscribe` with `T.<symbol>`, `A.<symbol>`, `AM.<symbol>` or `<kind>.*`. Every
frame is a JSON array of events: `T` for each accepted trade (resends left out, as /stream does),
`t` in epoch milliseconds, `q` the acceptance order; `A` and `AM` second and minute bars, sent
shortly after the bucket closes and again when a late trade changes them (`serving.fanout`). A
consumer that falls too far behind is told `slow_consumer` and disconnected, so it never slows
the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from serving.auth import read_key_accepted
from serving.deps import services
from serving.fanout import KINDS, Subscriber
from serving.websocket import counted, until_one_ends

router = APIRouter(tags=["stream"])

AUTH_SECONDS = 10.0


def _status(status: str, message: str) -> list[dict[str, str]]:
    return [{"ev": "status", "status": status, "message": message}]


def _change(subscriber: Subscriber, action: str, params: str) -> list[dict[str, str]]:
    replies = []
    for channel in filter(None, (p.strip() for p in params.split(","))):
        kind, _, symbol = channel.partition(".")
        if kind not in KINDS or not symbol:
            replies += _status("error", f"unknown channel {channel!r} (T, A and AM are served)")
        elif action == "subscribe":
            subscriber.channels.add(channel)
            replies += _status("success", f"subscribed to: {channel}")
        else:
            subscriber.channels.discard(channel)
            replies += _status("success", f"unsubscribed to: {channel}")
    return replies


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
    if not isinstance(auth, dict) or auth.get("action") != "auth":
        await websocket.send_json(_status("auth_failed", "authenticate first"))
        await websocket.close(code=1008)
        return
    key = auth.get("params")
    if not read_key_accepted(shared.settings, key if isinstance(key, str) else None):
        await websocket.send_json(_status("auth_failed", "authentication failed"))
        await websocket.close(code=1008)
        return
    await websocket.send_json(_status("auth_success", "authenticated"))

    subscriber = Subscriber()
    shared.fanout.join(subscriber)
    try:
        async with counted(websocket) as ending:
            failed = await until_one_ends(
                _send(websocket, subscriber), _listen(websocket, subscriber), subscriber.slow.wait()
            )
            if subscriber.slow.is_set():
                ending.reason = "slow"
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await websocket.send_json(_status("slow_consumer", "too far behind"))
            elif failed:
                ending.reason = "error"
    finally:
        shared.fanout.leave(subscriber)


async def _send(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        await websocket.send_text(await subscriber.next_frame())


async def _listen(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        message: Any = await websocket.receive_json()
        action = message.get("action") if isinstance(message, dict) else None
        if action in ("subscribe", "unsubscribe") and isinstance(message.get("params"), str):
            replies = _change(subscriber, action, message["params"])
        else:
            replies = _status("error", "expected subscribe or unsubscribe with params")
        subscriber.offer(json.dumps(replies))
