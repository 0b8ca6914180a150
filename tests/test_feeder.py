"""The synthetic feeder: several sources, random walks, duplicates, out-of-order and late ticks,
all delivered (every acked tick is in the inbox)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from core.db import Connection
from mdp.feeder import FeedConfig, run_feed
from mdp.reconcile import read_ack_log
from tests.conftest import PASSWORD, SYMBOLS, USER


def test_the_feeder_delivers_a_realistic_mix(api_url: str, db: Connection, tmp_path: Path) -> None:
    ack_log = tmp_path / "acked.tsv"
    cfg = FeedConfig(
        url=api_url,
        symbols=SYMBOLS,
        rate=2000,
        sources=4,
        duration=3,
        batch_size=50,
        duplicate_share=0.05,
        late_share=0.05,
        username=USER,
        password=PASSWORD,
        ack_log=ack_log,
        seed=3,
    )
    stats = asyncio.run(run_feed(cfg))
    assert stats.rejected == 0
    assert stats.duplicates > 0 and stats.late > 0

    rows = db.execute(
        "SELECT source, event_id, symbol, ts, price FROM trade_inbox ORDER BY seq"
    ).fetchall()
    assert len(rows) == stats.ticks == len(ack_log.read_text().splitlines())
    assert read_ack_log(ack_log) == {(r[0], r[1]) for r in rows}
    assert {r[0] for r in rows} == {"XNAS", "ARCX", "BATS", "IEXG"}
    assert {r[2] for r in rows} == set(SYMBOLS)
    assert all(r[4] > 0 for r in rows)

    identities = [(r[0], r[1]) for r in rows]
    assert len(set(identities)) < len(identities), "some ticks are resent"
    timestamps = [r[3] for r in rows]
    assert any(b < a for a, b in pairwise(timestamps)), "out of order"
    now = datetime.now(UTC)
    assert any(now - ts > timedelta(minutes=1) for ts in timestamps), "late ticks"
