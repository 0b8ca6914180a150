"""Ingest benchmark: HTTP batches end to end vs a raw COPY of the same rows; single ticks vs the
same server's liveness probe."""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from core.conditions import REGULAR
from core.config import Settings
from core.db import connect
from mdp.bench.load import request_bytes, run_load
from mdp.bench.reference import plain_copy_rate
from mdp.processes import api_server
from serving.inbox import COPY_TYPES, INBOX_COLUMNS

BATCH_SIZE = 5_000
BATCH_CONCURRENCY = 4
TICK_CONCURRENCY = 32


def synthetic_ticks(count: int, symbols: list[str], prefix: str) -> list[dict[str, Any]]:
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        {
            "symbol": rng.choice(symbols),
            "price": round(rng.uniform(10, 500), 4),
            "volume": rng.randint(1, 1000),
            "ts": (start + timedelta(microseconds=i * 1000)).isoformat().replace("+00:00", "Z"),
            "source": "BENCH",
            "event_id": f"{prefix}-{i}",
        }
        for i in range(count)
    ]


def copy_references(url: str, ticks: list[dict[str, Any]]) -> tuple[float, float]:
    """rows/s of one binary COPY of the rows into a plain table shaped like trade_inbox (no
    index, no identity): what the disk and PostgreSQL take, the physical reference; and into a
    table made like trade_inbox (its identity, defaults and indexes): what those cost."""
    rows = [
        (
            t["symbol"],
            datetime.fromisoformat(t["ts"]),
            float(t["price"]),
            float(t["volume"]),
            t["source"],
            t["event_id"],
            t.get("conditions"),
            *REGULAR,
        )
        for t in ticks
    ]
    columns = dict(zip(INBOX_COLUMNS.split(", "), COPY_TYPES, strict=True))
    return plain_copy_rate(url, columns, rows), plain_copy_rate(
        url, columns, rows, like="trade_inbox"
    )


def bench_ingest(
    url: str, settings: Settings, *, rows: int = 200_000, workers: int = 1
) -> dict[str, Any]:
    password = secrets.token_urlsafe(12)
    auth = "Basic " + base64.b64encode(f"bench:{password}".encode()).decode()
    env = {"DATABASE_URL": url, "INGEST_USERNAME": "bench", "INGEST_PASSWORD": password}
    symbols = settings.symbol_list
    ticks = synthetic_ticks(rows, symbols, prefix=secrets.token_hex(4))
    with connect(url) as conn:
        conn.execute("TRUNCATE trade_inbox")

    copy_rows_per_s, copy_like_inbox_rows_per_s = copy_references(url, ticks)
    with api_server(env, workers=workers) as api:
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        bodies = [
            msgspec.json.encode(ticks[i : i + BATCH_SIZE]) for i in range(0, len(ticks), BATCH_SIZE)
        ]
        requests = [request_bytes(api, "POST", "/ingest/ticks", b, headers) for b in bodies]
        batches = asyncio.run(
            run_load(api, requests.__getitem__, total=len(requests), concurrency=BATCH_CONCURRENCY)
        )
        with connect(url) as conn:  # count what was accepted, not what was sent
            [(accepted,)] = conn.execute("SELECT count(*) FROM trade_inbox").fetchall()
        http_rows_per_s = accepted / batches.seconds

        singles = [
            request_bytes(api, "POST", "/ingest/tick", msgspec.json.encode(t), headers)
            for t in synthetic_ticks(20_000, symbols, prefix=secrets.token_hex(4))
        ]
        tick_load = asyncio.run(
            run_load(api, singles.__getitem__, total=len(singles), concurrency=TICK_CONCURRENCY)
        )
        probe = request_bytes(api, "GET", "/health/liveness")
        liveness = asyncio.run(
            run_load(api, lambda _: probe, total=len(singles), concurrency=TICK_CONCURRENCY)
        )
    with connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM trade_inbox").fetchone()
        conn.execute("TRUNCATE trade_inbox")
    return {
        "api_workers": workers,
        "batch": {
            "rows": len(ticks),
            "rows_accepted": accepted,
            "batch_size": BATCH_SIZE,
            "concurrency": BATCH_CONCURRENCY,
            "http_rows_per_s": round(http_rows_per_s),
            "copy_rows_per_s": round(copy_rows_per_s),
            "ratio": round(http_rows_per_s / copy_rows_per_s, 3),
            "copy_table_like_inbox_rows_per_s": round(copy_like_inbox_rows_per_s),
            "ratio_vs_copy_like_inbox": round(http_rows_per_s / copy_like_inbox_rows_per_s, 3),
            "latency": batches.summary(),
        },
        "single_tick": {
            "concurrency": TICK_CONCURRENCY,
            "tick": tick_load.summary(),
            "liveness": liveness.summary(),
            "ratio": round(tick_load.per_second / liveness.per_second, 3),
        },
        "rows_stored": stored[0] if stored else 0,
    }
