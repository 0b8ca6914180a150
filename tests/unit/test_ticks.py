"""`parse_ticks` alone: what a body becomes, and how a refusal names each bad tick."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.ticks import InvalidTicks, MalformedBody, TickError, parse_ticks
from tests.support import tick

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SYMBOLS = {"AAPL", "MSFT"}


def parse(body: object, *, batch: bool = True) -> list[tuple[object, ...]]:
    raw = json.dumps(body).encode()
    return list(parse_ticks(raw, batch=batch, ndjson=False, symbols=SYMBOLS, now=NOW))


def refusal(body: bytes | object, *, batch: bool = True, ndjson: bool = False) -> InvalidTicks:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidTicks) as refused:
        parse_ticks(raw, batch=batch, ndjson=ndjson, symbols=SYMBOLS, now=NOW)
    return refused.value


def test_a_batch_becomes_rows_in_list_order_in_utc() -> None:
    rows = parse([tick(1, ts="2026-11-20T09:30:00-05:00"), tick(2, ts=1_763_650_800_250)])
    assert rows == [
        ("AAPL", datetime(2026, 11, 20, 14, 30, tzinfo=UTC), 187.25, 100.0, "XNAS", "e-1"),
        (
            "AAPL",
            datetime(2025, 11, 20, 15, 0, 0, 250_000, tzinfo=UTC),
            187.25,
            100.0,
            "XNAS",
            "e-2",
        ),
    ]


def test_ndjson_lines_are_a_batch() -> None:
    body = b"\n".join(json.dumps(tick(i)).encode() for i in range(3)) + b"\n\n"
    rows = parse_ticks(body, batch=True, ndjson=True, symbols=SYMBOLS, now=NOW)
    assert [r[5] for r in rows] == ["e-0", "e-1", "e-2"]


def test_every_bad_tick_is_named_with_its_field() -> None:
    body = [tick(0), tick(1, price=-1), tick(2, symbol="NOPE", volume="9"), tick(3, ts="today")]
    assert refusal(body).errors == [
        TickError(1, "price", "must be greater than 0"),
        TickError(2, "symbol", "unknown symbol 'NOPE'"),
        TickError(2, "volume", "must be a JSON number"),
        TickError(
            3,
            "ts",
            "must be an RFC 3339 timestamp with a zone offset, or integer epoch milliseconds",
        ),
    ]


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"ts": "2026-11-20T14:30:00"}, "ts", "must be an RFC 3339"),
        ({"ts": (NOW + timedelta(minutes=6)).isoformat()}, "ts", "more than 5 minutes"),
        ({"event_id": "a\u0000b"}, "event_id", "NUL"),
        ({"source": ""}, "source", "length"),
        ({"exchange": "XNAS"}, "exchange", "is not a tick field"),
    ],
)
def test_one_bad_field_refuses_the_tick(fields: dict[str, Any], field: str, reason: str) -> None:
    [error] = refusal([tick(**fields)]).errors
    assert (error.index, error.field) == (0, field)
    assert reason in error.reason


def test_an_empty_batch_and_the_wrong_shape_are_refused() -> None:
    assert "empty batch" in str(refusal([]))
    assert refusal(tick(), batch=True).errors == []  # an object where an array belongs
    with pytest.raises(InvalidTicks):
        parse([tick()], batch=False)  # an array where an object belongs


def test_broken_json_is_malformed_not_invalid() -> None:
    with pytest.raises(MalformedBody, match="malformed JSON"):
        parse_ticks(b'[{"symbol": ', batch=True, ndjson=False, symbols=SYMBOLS, now=NOW)
    with pytest.raises(MalformedBody, match="line 2"):
        parse_ticks(b'{"a": 1}\n{oops\n', batch=True, ndjson=True, symbols=SYMBOLS, now=NOW)
