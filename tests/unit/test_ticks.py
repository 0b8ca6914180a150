"""`parse_ticks` alone: what a body becomes, and how a refusal names each bad tick."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.conditions import Rules
from core.ticks import InvalidTicks, MalformedBody, TickError, parse_ticks
from tests.support import tick

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SYMBOLS = {"AAPL", "MSFT"}
# Odd lot, derivatively priced, intermarket sweep, and a flag that restricts nothing.
CONDITIONS = {37: Rules(False, False, True), 10: Rules(True, False, True), 14: Rules(), 60: None}
CONTEXT: dict[str, Any] = {"symbols": SYMBOLS, "conditions": CONDITIONS, "now": NOW}


def parse(body: object, *, batch: bool = True) -> list[tuple[object, ...]]:
    raw = json.dumps(body).encode()
    return list(parse_ticks(raw, batch=batch, ndjson=False, **CONTEXT))


def refusal(body: bytes | object, *, batch: bool = True, ndjson: bool = False) -> InvalidTicks:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidTicks) as refused:
        parse_ticks(raw, batch=batch, ndjson=ndjson, **CONTEXT)
    return refused.value


def test_a_batch_becomes_rows_in_list_order_in_utc() -> None:
    rows = parse([tick(1, ts="2026-11-20T09:30:00-05:00"), tick(2, ts=1_763_650_800_250)])
    assert [row[:6] for row in rows] == [
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
    assert all(row[6:] == (None, True, True, True) for row in rows)  # regular trades


def test_ndjson_lines_are_a_batch() -> None:
    body = b"\n".join(json.dumps(tick(i)).encode() for i in range(3)) + b"\n\n"
    rows = parse_ticks(body, batch=True, ndjson=True, **CONTEXT)
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
        parse_ticks(b'[{"symbol": ', batch=True, ndjson=False, **CONTEXT)
    with pytest.raises(MalformedBody, match="line 2"):
        parse_ticks(b'{"a": 1}\n{oops\n', batch=True, ndjson=True, **CONTEXT)


@pytest.mark.parametrize(
    ("conditions", "stored", "rules"),
    [
        (None, None, (True, True, True)),
        ([], None, (True, True, True)),
        ([14], [14], (True, True, True)),
        ([37], [37], (False, False, True)),
        ([10], [10], (True, False, True)),
        ([10, 37], [10, 37], (False, False, True)),  # the most restrictive wins, field by field
        ([60], [60], (True, True, True)),  # a flag without rules restricts nothing
    ],
)
def test_sale_conditions_give_a_tick_its_rules(
    conditions: list[int] | None, stored: list[int] | None, rules: tuple[bool, ...]
) -> None:
    [row] = parse([tick(conditions=conditions)])
    assert row[6] == stored
    assert row[7:] == rules


def test_an_unknown_condition_is_refused_by_its_code() -> None:
    errors = refusal([tick(), tick(conditions=[14, 99, 98, 99])]).errors
    assert errors == [
        TickError(1, "conditions", "unknown sale condition 99"),
        TickError(1, "conditions", "unknown sale condition 98"),
    ]


@pytest.mark.parametrize("conditions", [["37"], [-1], [40000], 37, list(range(17))])
def test_conditions_must_be_a_short_list_of_codes(conditions: object) -> None:
    [error] = refusal([tick(conditions=conditions)]).errors
    assert (error.field, error.reason) == (
        "conditions",
        "must be a list of at most 16 sale condition codes (integers 0 to 32767)",
    )
