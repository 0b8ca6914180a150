"""Operations endpoints: the ingestion freshness model and the metrics document, in JSON and in the
Prometheus and OpenMetrics text formats, correct across several API workers."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.openmetrics import parser as openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from core.db import Connection, connect, query
from mdp.imports import import_file
from mdp.processes import api_server
from pipelines.ingestion import drain_inbox, promote_batch, record_idle_cycle
from tests.conftest import api_env
from tests.support import send, tick

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def test_ingestion_is_unknown_then_alive_then_stale(client: httpx.Client, db: Connection) -> None:
    unknown = client.get("/status/ingestion").json()
    assert (unknown["status"], unknown["alive"], unknown["heartbeat_at"]) == (
        "unknown",
        False,
        None,
    )
    assert unknown["stale_threshold_seconds"] == 30  # 3 x the default 10 s interval
    assert unknown["db"]["healthy"] is True

    send(client, [tick(1, ts="2026-11-20T10:00:00Z")])
    drain_inbox(db)
    record_idle_cycle(db)
    alive = client.get("/status/ingestion").json()
    assert (alive["status"], alive["alive"]) == ("alive", True)
    assert 0 <= alive["heartbeat_age_seconds"] < 30
    assert alive["seconds_since_last_trade"] > 3 * 86_400  # the trade's time is days ago
    assert alive["uptime_seconds"] > 0
    assert alive["idle"] is True  # alive, and a quiet market: not stale
    assert alive["oldest_pending_seconds"] is None  # nothing waits

    send(client, [tick(2, ts=datetime.now(UTC).isoformat())])  # trading, and one tick pending
    trading = client.get("/status/ingestion").json()
    assert trading["idle"] is False
    assert trading["oldest_pending_seconds"] is not None and trading["oldest_pending_seconds"] >= 0
    drain_inbox(db)
    record_idle_cycle(db)

    db.execute("UPDATE ingest_batches SET finished_at = finished_at - interval '31 seconds'")
    stale = client.get("/status/ingestion").json()
    assert (stale["status"], stale["alive"], stale["idle"]) == ("stale", False, False)
    assert stale["heartbeat_age_seconds"] >= 31


def test_promoted_and_duplicate_rates_show_a_feed_that_only_resends(
    client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(i, ts="2026-11-20T10:00:00Z") for i in range(6)])
    drain_inbox(db)
    send(client, [tick(i, ts="2026-11-20T10:00:00Z") for i in range(6, 9)])  # 3 new
    send(client, [tick(i, ts="2026-11-20T10:00:00Z") for i in range(9)])  # all 9 again
    drain_inbox(db)
    status = client.get("/status/ingestion").json()
    assert status["promoted_per_second"] == round(9 / 60, 3)  # over the last minute
    assert status["duplicates_per_second"] == round(9 / 60, 3)

    db.execute("UPDATE ingest_batches SET finished_at = finished_at - interval '61 seconds'")
    quiet = client.get("/metrics").json()["ingestion"]
    assert (quiet["promoted_per_second"], quiet["duplicates_per_second"]) == (0, 0)
    text = client.get("/metrics", headers={"Accept": "text/plain"}).text
    families = {f.name: f for f in parse_prometheus(text)}
    assert families["mdp_duplicate_ticks"].samples[0].value == 9  # a counter: mdp_…_total
    assert families["mdp_duplicates_per_second"].samples[0].value == 0


def test_metrics_json_counts_what_the_tables_hold(client: httpx.Client, db: Connection) -> None:
    send(client, [tick(i, ts="2026-11-20T10:00:00Z") for i in range(3)])
    drain_inbox(db)
    send(client, [tick(9)])  # pending
    client.get("/candles", params={"symbol": "AAPL"})
    body = client.get("/metrics").json()
    assert body["counts"] == {"trades": 3, "candles": 5, "symbols": 5, "inbox_pending": 1}
    assert body["db"]["healthy"] is True
    assert body["ingestion"]["status"] == "alive"
    latency = body["api_latency_ms"]["GET /candles"]
    assert latency["count"] >= 1
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert latency["max"] > 0


def inbox_figures(client: httpx.Client, db: Connection) -> tuple[int, datetime | None]:
    """Ticks pending as /metrics reports them (checked against counting the inbox) and the latest
    trade time the status query gives."""
    pending = client.get("/metrics").json()["counts"]["inbox_pending"]
    [(counted,)] = db.execute("SELECT count(*) FROM trade_inbox").fetchall()
    assert pending == counted
    row = db.execute(query("platform_snapshot")).fetchone()
    assert row is not None
    return pending, row[1]


def at(second: int) -> datetime:
    return datetime(2026, 11, 20, 10, 0, second, tzinfo=UTC)


def test_the_inbox_figures_follow_appends_drains_resends_imports_and_truncate(
    client: httpx.Client, db: Connection, database_url: str, tmp_path: Path
) -> None:
    """/status and /metrics read a ledger kept as the inbox changes, not the inbox itself."""

    def figures() -> tuple[int, datetime | None]:
        return inbox_figures(client, db)

    assert figures() == (0, None)
    send(client, [tick(i, ts=at(i).isoformat()) for i in range(1, 6)])
    assert figures() == (5, at(5))
    promote_batch(db, max_rows=3)
    assert figures() == (2, at(5))
    send(client, [tick(1, ts=at(9).isoformat())])  # a resend, later than every trade
    assert figures() == (3, at(9))
    drain_inbox(db)
    assert figures() == (0, at(9))  # dropped at promotion, but it was accepted

    with ThreadPoolExecutor(8) as pool:  # concurrent requests share commits
        batches = [[tick(100 + 10 * b + i, ts=at(b % 9).isoformat()) for i in range(10)]
                   for b in range(40)]  # fmt: skip
        statuses = pool.map(lambda batch: client.post("/ingest/ticks", json=batch), batches)
        assert {r.status_code for r in statuses} == {202}
    assert figures() == (400, at(9))
    for i in range(150):  # any writer counts, one statement at a time
        db.execute(
            "INSERT INTO trade_inbox (symbol, ts, price, volume, source, event_id)"
            " VALUES ('MSFT', %s, 10, 1, 'SQL', %s)",
            (at(i % 7), f"s-{i}"),
        )
    assert figures() == (550, at(9))
    [(entries,)] = db.execute("SELECT count(*) FROM inbox_ledger").fetchall()
    assert entries <= 64  # folded as it grows: readers sum a few rows

    ticks = tmp_path / "ticks.ndjson"
    later = {**tick(1000, ts=at(30).isoformat()), "source": "FILE"}
    ticks.write_text(json.dumps(later) + "\n")
    assert import_file(database_url, ticks, "ticks", None, register=False).stored == 1
    assert figures() == (550, at(30))  # imports go straight to the trades
    drain_inbox(db, max_rows=150)
    assert figures() == (0, at(30))

    send(client, [tick(2000, ts=at(40).isoformat())])
    db.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches")  # as the fixtures do
    assert figures() == (0, at(30))  # the symbols keep their span
    db.execute("UPDATE symbols SET first_trade_at = NULL, last_trade_at = NULL")
    assert figures() == (0, None)
    send(client, [tick(3000, ts=at(50).isoformat())])
    assert figures() == (1, at(50))


def test_an_ack_never_waits_for_a_drain_that_folds_the_inbox_ledger(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    """The drain's transaction can hold ledger rows it folds for as long as it runs; writers fold
    around them, and no tick is counted twice or lost."""
    next_entry = "SELECT setval(pg_get_serial_sequence('inbox_ledger', 'entry'), %s)"
    send(client, [tick(i, ts=at(i).isoformat()) for i in range(1, 4)])
    with connect(database_url) as drain:  # a transaction, like promote_batch's
        [(entry,)] = db.execute("SELECT max(entry) FROM inbox_ledger").fetchall()
        db.execute(next_entry, (entry // 64 * 64 + 63,))  # the drain's entry folds
        drain.execute("DELETE FROM trade_inbox WHERE seq = (SELECT min(seq) FROM trade_inbox)")
        [(held,)] = drain.execute("SELECT count(*) FROM inbox_ledger").fetchall()
        assert held == 1  # every row folded into one, locked until the drain commits
        db.execute(next_entry, (entry // 64 * 64 + 127,))  # and the next writer's entry folds
        send(client, [tick(4, ts=at(4).isoformat())])  # the client's timeout bounds the wait
        assert inbox_figures(client, db) == (4, at(4))  # the drain's delete is not committed
        drain.commit()
    assert inbox_figures(client, db) == (3, at(4))
    send(client, [tick(5, ts=at(5).isoformat())])
    assert inbox_figures(client, db) == (4, at(5))


def test_prometheus_scrapes_get_text_that_parses(client: httpx.Client) -> None:
    client.get("/symbols")
    text = client.get("/metrics", headers={"Accept": "text/plain"})
    assert text.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in parse_prometheus(text.text)}
    assert families["mdp_db_up"].samples[0].value == 1
    assert any(s.labels.get("route") == "/symbols" for s in families["mdp_http_requests"].samples)

    scraped = client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    parsed = openmetrics.text_string_to_metric_families(scraped.text)  # type: ignore[no-untyped-call]
    names = {f.name for f in parsed}
    assert {"mdp_http_request_duration_seconds", "mdp_trades", "mdp_ingestion_alive"} <= names

    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert client.get("/metrics", headers={"Accept": browser}).json()["counts"]


def test_request_metrics_add_up_across_two_workers(database_url: str) -> None:
    def answered(url: str) -> tuple[int, float]:
        body = httpx.get(f"{url}/metrics").json()
        text = httpx.get(f"{url}/metrics", headers={"Accept": "text/plain"}).text
        [requests] = [f for f in parse_prometheus(text) if f.name == "mdp_http_requests"]
        liveness = [s for s in requests.samples if s.labels["route"] == "/health/liveness"]
        total = sum(s.value for s in liveness if s.name.endswith("_total"))
        return body["api_latency_ms"]["GET /health/liveness"]["count"], total

    with api_server(api_env(database_url), workers=2) as url:
        before = answered(url)
        for _ in range(40):
            # A new connection each time, so both workers answer some.
            assert httpx.get(f"{url}/health/liveness").status_code == 200
        after = answered(url)
        assert (after[0] - before[0], after[1] - before[1]) == (40, 40)
