"""The ingest contract (docs/design.md §4): what is accepted, what is refused, and that a refusal
stores nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.db import Connection
from tests.conftest import PASSWORD, USER
from tests.support import tick

Row = tuple[Any, ...]


def inbox(db: Connection) -> list[Row]:
    return db.execute(
        "SELECT symbol, ts, price, volume, source, event_id FROM trade_inbox ORDER BY seq"
    ).fetchall()


def test_one_tick_is_acked_and_stored_in_utc(client: httpx.Client, db: Connection) -> None:
    response = client.post("/ingest/tick", json=tick(ts="2026-11-20T09:30:00.123456-05:00"))
    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    [(symbol, ts, price, volume, source, event_id)] = inbox(db)
    assert (symbol, price, volume, source, event_id) == ("AAPL", 187.25, 100.0, "XNAS", "e-1")
    assert ts == datetime(2026, 11, 20, 14, 30, 0, 123456, tzinfo=UTC)


def test_epoch_milliseconds_are_accepted(client: httpx.Client, db: Connection) -> None:
    assert client.post("/ingest/tick", json=tick(ts=1_763_908_200_250)).status_code == 202
    assert inbox(db)[0][1] == datetime(2025, 11, 23, 14, 30, 0, 250000, tzinfo=UTC)


def test_a_batch_is_stored_in_list_order(client: httpx.Client, db: Connection) -> None:
    batch = [tick(i, price=100 + i) for i in range(50)]
    response = client.post("/ingest/ticks", json=batch)
    assert response.status_code == 202
    assert response.json() == {"accepted": 50}
    assert [r[5] for r in inbox(db)] == [f"e-{i}" for i in range(50)]


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/jsonl"])
def test_ndjson_batches_are_accepted(
    client: httpx.Client, db: Connection, content_type: str
) -> None:
    body = "\n".join(json.dumps(tick(i)) for i in range(3)) + "\n\n"
    response = client.post("/ingest/ticks", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 202
    assert [r[5] for r in inbox(db)] == ["e-0", "e-1", "e-2"]


def test_a_resent_tick_is_accepted_again(client: httpx.Client, db: Connection) -> None:
    assert client.post("/ingest/tick", json=tick()).status_code == 202
    assert client.post("/ingest/tick", json=tick()).status_code == 202
    assert len(inbox(db)) == 2  # the inbox keeps what was acked; promotion keeps the first


FUTURE = (datetime.now(UTC) + timedelta(hours=6)).isoformat()
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("unknown symbol", tick(symbol="NOPE"), "symbol"),
    ("lower-case symbol", tick(symbol="aapl"), "symbol"),
    ("zero price", tick(price=0), "price"),
    ("negative price", tick(price=-1.5), "price"),
    ("numeric string price", tick(price="187.25"), "price"),
    ("boolean price", tick(price=True), "price"),
    ("null price", tick(price=None), "price"),
    ("zero volume", tick(volume=0), "volume"),
    ("negative volume", tick(volume=-10), "volume"),
    ("numeric string volume", tick(volume="10"), "volume"),
    ("naive timestamp", tick(ts="2026-11-20T14:30:00"), "ts"),
    ("date only", tick(ts="2026-11-23"), "ts"),
    ("garbage timestamp", tick(ts="yesterday"), "ts"),
    ("fractional epoch", tick(ts=1_763_908_200_250.5), "ts"),
    ("far future", tick(ts=FUTURE), "ts"),
    ("before the year 1 in UTC", tick(ts="0001-01-01T00:00:00+05:00"), "ts"),
    ("empty source", tick(source=""), "source"),
    ("long source", tick(source="S" * 65), "source"),
    ("empty event id", tick(event_id=""), "event_id"),
    ("long event id", tick(event_id="E" * 129), "event_id"),
    ("NUL in event id", tick(event_id="a\u0000b"), "event_id"),
    ("missing price", {k: v for k, v in tick().items() if k != "price"}, "price"),
    ("unexpected field", tick(exchange="XNAS"), "exchange"),
]


@pytest.mark.parametrize(("case", "bad", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_an_invalid_tick_is_refused_with_its_field(
    client: httpx.Client, db: Connection, case: str, bad: dict[str, Any], field: str
) -> None:
    response = client.post("/ingest/tick", json=bad)
    assert response.status_code == 422, case
    errors = response.json()["errors"]
    assert {(e["index"], e["field"]) for e in errors} == {(0, field)}
    assert all(e["reason"] for e in errors)
    assert inbox(db) == []


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(client: httpx.Client, db: Connection, literal: str) -> None:
    body = json.dumps(tick()).replace("187.25", literal)
    response = client.post(
        "/ingest/tick", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert inbox(db) == []


def test_one_bad_tick_refuses_the_whole_batch_listing_each_error(
    client: httpx.Client, db: Connection
) -> None:
    batch = [tick(0), tick(1, price=-1), tick(2), tick(3, symbol="NOPE", volume="9"), tick(4)]
    response = client.post("/ingest/ticks", json=batch)
    assert response.status_code == 422
    body = response.json()
    assert "nothing stored" in body["detail"]
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "price"),
        (3, "symbol"),
        (3, "volume"),
    ]
    assert inbox(db) == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/ingest/ticks", []),
        ("/ingest/ticks", tick()),
        ("/ingest/tick", [tick()]),
        ("/ingest/tick", "AAPL"),
        ("/ingest/ticks", [tick(0), 42]),
    ],
    ids=["empty batch", "object to batch", "array to single", "string", "non-object item"],
)
def test_wrong_shapes_are_refused(
    client: httpx.Client, db: Connection, path: str, body: Any
) -> None:
    assert client.post(path, json=body).status_code == 422
    assert inbox(db) == []


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/ingest/tick", b'{"symbol": "AAPL", ', "application/json"),
        ("/ingest/ticks", b"[{]", "application/json"),
        ("/ingest/ticks", b"", "application/json"),
        ("/ingest/ticks", b'{"symbol": "AAPL"}\n{oops\n', "application/x-ndjson"),
    ],
    ids=["truncated object", "broken array", "empty body", "broken ndjson line"],
)
def test_malformed_json_is_a_400(
    client: httpx.Client, db: Connection, path: str, body: bytes, content_type: str
) -> None:
    response = client.post(path, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert "malformed" in response.json()["detail"]
    assert inbox(db) == []


def test_a_body_above_the_limit_is_a_413(client: httpx.Client, db: Connection) -> None:
    batch = [tick(i, event_id=f"{i}-" + "x" * 100) for i in range(70_000)]  # ~11 MiB
    response = client.post("/ingest/ticks", json=batch)
    assert response.status_code == 413
    assert inbox(db) == []


def test_a_chunked_body_above_the_limit_is_a_413(client: httpx.Client, db: Connection) -> None:
    def chunks() -> Any:
        yield b"["
        for i in range(70_000):
            yield json.dumps(tick(i, event_id=f"{i}-" + "x" * 100)).encode() + b","
        yield json.dumps(tick()).encode() + b"]"

    response = client.post("/ingest/ticks", content=chunks())
    assert response.status_code == 413
    assert inbox(db) == []


@pytest.mark.parametrize(
    "auth",
    [None, (USER, "wrong"), ("someone", PASSWORD), ("", "")],
    ids=["missing", "wrong password", "wrong user", "empty"],
)
def test_ingest_requires_the_configured_credentials(
    api_url: str, db: Connection, auth: tuple[str, str] | None
) -> None:
    response = httpx.post(f"{api_url}/ingest/tick", json=tick(), auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert PASSWORD not in response.text
    assert inbox(db) == []


@pytest.mark.parametrize("header", ["Basic !!!", "Bearer abc", "Basic " + "QQ==", "Digest x"])
def test_malformed_authorization_is_a_401(api_url: str, db: Connection, header: str) -> None:
    response = httpx.post(
        f"{api_url}/ingest/ticks", json=[tick()], headers={"Authorization": header}
    )
    assert response.status_code == 401
    assert inbox(db) == []


def test_liveness_needs_nothing(api_url: str) -> None:
    assert httpx.get(f"{api_url}/health/liveness").json() == {"status": "alive"}


def test_readiness_is_green_on_a_migrated_database(api_url: str) -> None:
    response = httpx.get(f"{api_url}/health/readiness")
    assert response.status_code == 200
    assert response.json()["migrations_pending"] == []
