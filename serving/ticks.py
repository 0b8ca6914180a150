"""What a tick is (DESIGN §3.4) and how a request body becomes rows for the inbox, or a refusal."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict

MAX_FUTURE = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Positive = Annotated[StrictFloat | StrictInt, Field(gt=0, allow_inf_nan=False)]
NoNul = r"^[^\x00]*$"


class Tick(TypedDict):
    """One trade as sent by a source."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)  # type: ignore[misc]

    symbol: StrictStr
    price: Positive
    volume: Positive
    ts: AwareDatetime | StrictInt
    source: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=NoNul)]
    event_id: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=NoNul)]


InboxRow = tuple[str, datetime, float, float, str, str]

_ONE = TypeAdapter(Tick)
_MANY = TypeAdapter(list[Tick])

_TS_REASON = "must be an RFC 3339 timestamp with a zone offset, or integer epoch milliseconds"
_REASONS = {
    "missing": "is required",
    "extra_forbidden": "is not a tick field",
    "float_type": "must be a JSON number",
    "int_type": "must be a JSON number",
    "finite_number": "must be a finite number",
    "greater_than": "must be greater than 0",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long",
    "string_pattern_mismatch": "must not contain NUL characters",
}


@dataclass(frozen=True)
class TickError:
    index: int
    field: str
    reason: str


class MalformedBody(ValueError):
    """The body is not JSON (or NDJSON) at all: a 400."""


class InvalidTicks(ValueError):
    """The body is JSON but some ticks break the contract: a 422 listing each."""

    def __init__(self, errors: list[TickError], message: str | None = None) -> None:
        self.errors = errors
        super().__init__(message or f"{len({e.index for e in errors})} invalid tick(s)")


def parse_ticks(
    body: bytes, *, batch: bool, ndjson: bool, symbols: Collection[str], now: datetime
) -> list[InboxRow]:
    """Validate a whole request body; return inbox rows in list order, or raise for all of it."""
    if ndjson:
        body = _ndjson_as_array(body)
    elif batch != _looks_like_array(body):
        _ensure_json(body)
        shape = "a JSON array of ticks (or NDJSON)" if batch else "one JSON object"
        raise InvalidTicks([], f"the body must be {shape}")
    try:
        ticks = _MANY.validate_json(body) if batch or ndjson else [_ONE.validate_json(body)]
    except ValidationError as exc:
        raise _refusal(exc, body, batch=batch or ndjson, symbols=symbols) from None
    if not ticks:
        raise InvalidTicks([], "an empty batch stores nothing; send at least one tick")
    return _rows(ticks, symbols, now)


def _rows(ticks: list[Tick], symbols: Collection[str], now: datetime) -> list[InboxRow]:
    latest = now + MAX_FUTURE
    rows: list[InboxRow] = []
    errors: list[TickError] = []
    for i, t in enumerate(ticks):
        ts = t["ts"]
        if isinstance(ts, int):
            try:
                ts = EPOCH + timedelta(milliseconds=ts)
            except OverflowError:
                errors.append(TickError(i, "ts", "epoch milliseconds out of range"))
                continue
        else:
            ts = ts.astimezone(UTC)
        if ts > latest:
            errors.append(TickError(i, "ts", "is more than 5 minutes in the future"))
        if t["symbol"] not in symbols:
            errors.append(_unknown(i, t["symbol"]))
        rows.append((t["symbol"], ts, t["price"], t["volume"], t["source"], t["event_id"]))
    if errors:
        raise InvalidTicks(errors)
    return rows


def _refusal(
    exc: ValidationError, body: bytes, *, batch: bool, symbols: Collection[str]
) -> Exception:
    errors: dict[tuple[int, str], TickError] = {}
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err["loc"])
        if err["type"].startswith("json"):
            return MalformedBody(f"malformed JSON: {err['msg']}")
        index = int(loc.pop(0)) if batch and loc else 0
        field = str(loc[0]) if loc else ""
        if not field:
            reason = "must be a JSON object with the tick fields"
        elif field == "ts" and err["type"] != "missing":
            reason = _TS_REASON
        else:
            reason = _REASONS.get(err["type"], err["msg"])
        errors.setdefault((index, field), TickError(index, field, reason))
    if not batch and not errors:
        return InvalidTicks([], "the body must be one JSON object")
    # Report unknown symbols too, not only the schema errors that stopped validation.
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:  # NaN and Infinity literals, already reported
        items = []
    for index, item in enumerate(items if batch else [items]):
        symbol = item.get("symbol") if isinstance(item, dict) else None
        if isinstance(symbol, str) and symbol not in symbols:
            errors.setdefault((index, "symbol"), _unknown(index, symbol))
    return InvalidTicks(sorted(errors.values(), key=lambda e: (e.index, e.field)))


def _unknown(index: int, symbol: str) -> TickError:
    return TickError(index, "symbol", f"unknown symbol {symbol!r}")


def _ensure_json(body: bytes) -> None:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON: {exc}") from None


def _looks_like_array(body: bytes) -> bool:
    return body.lstrip()[:1] == b"["


def _ndjson_as_array(body: bytes) -> bytes:
    lines = [line for line in body.splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise MalformedBody(f"malformed NDJSON on line {number}: {exc}") from None
        if not line.lstrip().startswith(b"{"):
            raise InvalidTicks([TickError(number - 1, "", "must be a JSON object")])
    return b"[" + b",".join(lines) + b"]"
