"""`GET /stocks` (WebSocket): Polygon/Massive's stocks streaming protocol, so the official
`massive` `WebSocketClient(feed="HOST:PORT", market="stocks", secure=False)` works unchanged.

On connect a `connected` status; then `{"action": "auth", "params": KEY}` (any key while
READ_API_KEYS is unset; `auth_failed` and the connection closed for a key not among them, and
`max_connections` for a key that already holds MDP_STOCKS_MAX_CONNECTIONS_PER_KEY connections on
this process, as Polygon answers); then `subscribe` / `unsubscribe` with `T.<symbol>`,
`A.<symbol>`, `AM.<symbol>` or `<kind>.*`: a channel of a symbol not registered is refused with an
`error` status, and a subscribe that would take the connection past MDP_STOCKS_MAX_CHANNELS is
refused as a whole, so that what a connection costs the shared reader is bounded. Every
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
from serving.errors import DATABASE_UNAVAILABLE
from serving.fanout import KINDS, Subscriber
from serving.symbols import SymbolRegistry
from serving.websocket import counted, until_one_ends

router = APIRouter(tags=["stream"])

AUTH_SECONDS = 10.0


def _status(status: str, message: str) -> list[dict[str, str]]:
    return [{"ev": "status", "status": status, "message": message}]


async def _change(
    subscriber: Subscriber, action: str, params: str, registry: SymbolRegistry, limit: int
) -> list[dict[str, str]]:
    """Apply a subscribe or unsubscribe; its statuses: one per channel, an error for each channel
    refused (an unknown kind or symbol), or one error refusing a subscribe as a whole when it would
    take the connection past `limit` channels."""
    channels = [c for c in (p.strip() for p in params.split(",")) if c]
    subscribing = action == "subscribe"
    if subscribing and len(channels) > limit:
        return _over_limit(limit)  # before any work per channel: it could be millions
    named = {c.partition(".")[2] for c in channels} - {"*", ""}
    if subscribing and not named <= registry.symbols:
        with contextlib.suppress(*DATABASE_UNAVAILABLE):  # a symbol registered since we looked
            await registry.refresh(named)
    replies: list[dict[str, str]] = []
    changed: list[str] = []
    for channel in channels:
        kind, _, symbol = channel.partition(".")
        if kind not in KINDS or not symbol:
            replies += _status("error", f"unknown channel {channel!r} (T, A and AM are served)")
        elif subscribing and symbol != "*" and symbol not in registry.symbols:
            replies += _status("error", f"unknown symbol {symbol!r}: not subscribed to {channel}")
        else:
            changed.append(channel)
    if not subscribing:
        subscriber.unsubscribe(changed)
        return replies + [s for c in changed for s in _status("success", f"unsubscribed to: {c}")]
    if len(subscriber.channels.union(changed)) > limit:
        return replies + _over_limit(limit)
    subscriber.subscribe(changed)
    return replies + [s for c in changed for s in _status("success", f"subscribed to: {c}")]


def _over_limit(limit: int) -> list[dict[str, str]]:
    return _status(
        "error",
        f"subscription limit reached: at most {limit} channels per connection; nothing of this"
        " subscribe was applied (unsubscribe some, or use a wildcard such as T.*)",
    )


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
    # Keys are counted only when they are configured: while reads are public any key passes.
    subscriber = Subscriber(key if shared.settings.read_keys and isinstance(key, str) else None)
    limit = shared.settings.stocks_max_connections_per_key
    if subscriber.key is not None and shared.fanout.connections(subscriber.key) >= limit:
        await websocket.send_json(
            _status(
                "max_connections",
                f"maximum number of connections reached: {limit} per key on this server",
            )
        )
        await websocket.close(code=1008)
        return
    shared.fanout.join(subscriber)  # counted from here: nothing awaited since the check
    try:
        await websocket.send_json(_status("auth_success", "authenticated"))
        async with counted(websocket) as ending:
            failed = await until_one_ends(
                _send(websocket, subscriber),
                _listen(websocket, subscriber, shared.symbols, shared.settings.stocks_max_channels),
                subscriber.slow.wait(),
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


async def _listen(
    websocket: WebSocket, subscriber: Subscriber, registry: SymbolRegistry, limit: int
) -> None:
    while True:
        message: Any = await websocket.receive_json()
        action = message.get("action") if isinstance(message, dict) else None
        if action in ("subscribe", "unsubscribe") and isinstance(message.get("params"), str):
            replies = await _change(subscriber, action, message["params"], registry, limit)
        else:
            replies = _status("error", "expected subscribe or unsubscribe with params")
        subscriber.offer(json.dumps(replies))
