"""The app in process (`TestClient(create_app(...))`) for what needs no database: refusals made
before any query, the probes, the API description. The end-to-end tests run the real server."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from mdp.processes import free_port
from serving.app import MissingCredentials, create_app
from serving.candle_cache import Candle
from tests.support import tick

AUTH = {"Authorization": "Basic " + base64.b64encode(b"feeder:s3cret").decode()}


def settings(**fields: object) -> Settings:
    nowhere = f"postgresql://127.0.0.1:{free_port()}/market"  # nothing listens: no database
    return Settings(database_url=nowhere, **fields)  # type: ignore[arg-type]


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(settings(ingest_username="feeder", ingest_password="s3cret"))
    with TestClient(app) as client:
        yield client


def test_the_app_refuses_to_exist_without_ingest_credentials() -> None:
    with pytest.raises(MissingCredentials):
        create_app(settings())


def test_liveness_needs_nothing_and_readiness_says_the_database_is_away(client: TestClient) -> None:
    assert client.get("/health/liveness").json() == {"status": "alive"}
    readiness = client.get("/health/readiness")
    assert readiness.status_code == 503
    assert readiness.json()["database"] is False


def test_ingest_refusals_come_before_any_query(client: TestClient) -> None:
    assert client.post("/ingest/tick", json=tick()).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"feeder:guess").decode()}
    assert client.post("/ingest/tick", json=tick(), headers=wrong).status_code == 401
    malformed = client.post(
        "/ingest/ticks", content=b"[{", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["detail"]
    too_large = client.post(
        "/ingest/ticks", content=b"[]", headers={**AUTH, "Content-Length": str(11 * 2**20)}
    )
    assert too_large.status_code == 413


def test_the_api_describes_itself(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/ingest/ticks",
        "/candles",
        "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from_}/{to}",
    } <= set(paths)


def test_the_documented_candle_is_the_one_the_cache_encodes(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    sent = list(Candle.__struct_fields__)
    assert list(schemas["Candle"]["properties"]) == sent
    assert list(schemas["LatestCandle"]["properties"]) == [
        *(name for name in sent if name != "filled"),
        "symbol",
    ]
    assert schemas["Candle"]["properties"]["bucket_start"]["format"] == "date-time"
