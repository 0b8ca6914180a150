"""Helpers the test modules share: ticks to send, sending them, reading every candle page, and
waiting (bounded, never timed) for something to happen."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

T = TypeVar("T")


def tick(n: int = 1, **fields: Any) -> dict[str, Any]:
    """A valid tick with event id `e-<n>`; keyword arguments replace fields."""
    base = {
        "symbol": "AAPL",
        "price": 187.25,
        "volume": 100,
        "ts": "2026-11-20T14:30:00.123456+00:00",
        "source": "XNAS",
        "event_id": f"e-{n}",
    }
    return {**base, **fields}


def at(day: date, clock: str) -> str:
    """An RFC 3339 UTC time on `day` at `clock` (`HH:MM:SS`)."""
    return f"{day.isoformat()}T{clock}Z"


def send(client: httpx.Client, ticks: list[dict[str, Any]], batch: int = 150) -> None:
    """POST the ticks in batches, each acknowledged."""
    for i in range(0, len(ticks), batch):
        assert client.post("/ingest/ticks", json=ticks[i : i + batch]).status_code == 202


def all_candles(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every page of /candles, following next_page_token."""
    candles: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.get("/candles", params={**params, **({"page_token": token} if token else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        candles += body["candles"]
        token = body["next_page_token"]
        if token is None:
            return candles


def counter_totals(client: httpx.Client, family: str, label: str) -> dict[str, float]:
    """A Prometheus counter of the API's `/metrics`, its total by the value of `label`."""
    text = client.get("/metrics", headers={"Accept": "text/plain"}).text
    return {
        sample.labels[label]: sample.value
        for found in parse_prometheus(text)
        if found.name == family
        for sample in found.samples
        if sample.name.endswith("_total")
    }


class ServerSentEvents:
    """Server-Sent Events parsed from a stream's lines, fed one at a time: `line` gives an event
    (its `data` decoded as JSON) at the blank line that ends it."""

    def __init__(self) -> None:
        self._event: dict[str, str] = {}

    def line(self, line: str) -> dict[str, Any] | None:
        if not line:
            event, self._event = self._event, {}
            return {**event, "data": json.loads(event["data"])} if "data" in event else None
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            self._event[name] = value.removeprefix(" ")
        return None


def wait_for(what: str, condition: Callable[[], T], timeout: float, poll: float = 0.5) -> T:
    """The first truthy value of `condition`, asked every `poll` seconds; fails after `timeout`
    saying `what` did not happen (a bound for a loaded machine, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(poll)
    return found
