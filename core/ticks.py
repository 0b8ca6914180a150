"""What a tick is (docs/design.md §4) and how a body of ticks becomes rows for the inbox, or a
refusal: the trade contract, below every transport (HTTP ingest, `mdp import` of our tick files).

msgspec decodes and validates in one pass (several times faster than a general validator, which
the ingest throughput needs); only a refused body is walked item by item to list every bad tick."""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

from core.conditions import REGULAR, ConditionRules, rules_of
from core.intervals import EPOCH

# What a symbol may look like (the `symbols` table checks the same): anything else is no symbol.
SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,15}$")
MAX_FUTURE = timedelta(minutes=5)
# The earliest time Python can hold in UTC; an offset can put a year-1 time before it.
EARLIEST = datetime.min.replace(tzinfo=UTC)
# JSON can carry NUL only as this escape; PostgreSQL text cannot store it at all.
NUL_ESCAPE = b"\\u0000"

Positive = Annotated[float, msgspec.Meta(gt=0, le=sys.float_info.max)]  # finite, > 0
ConditionCode = Annotated[int, msgspec.Meta(ge=0, le=32767)]
MAX_CONDITIONS = 16


class Tick(msgspec.Struct, forbid_unknown_fields=True):
    """One trade as a source sends it; fields in the order of the inbox COPY."""

    symbol: str
    ts: Annotated[datetime, msgspec.Meta(tz=True)] | int
    price: Positive
    volume: Positive
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    # Polygon/Massive sale condition codes; none (or an empty list) is a regular trade.
    conditions: Annotated[list[ConditionCode], msgspec.Meta(max_length=MAX_CONDITIONS)] | None = (
        None
    )


# symbol, ts, price, volume, source, event_id, conditions, and the rules they give: updates
# high/low, open/close, volume.
InboxRow = tuple[str, datetime, float, float, str, str, list[int] | None, bool, bool, bool]

_ONE = msgspec.json.Decoder(Tick)
_MANY = msgspec.json.Decoder(list[Tick])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])

_TS_REASON = "must be an RFC 3339 timestamp with a zone offset, or integer epoch milliseconds"
_CONDITIONS_REASON = (
    f"must be a list of at most {MAX_CONDITIONS} sale condition codes (integers 0 to 32767)"
)
_WHERE = re.compile(r"^(?P<message>.*?)(?: - at `\$(?:\.(?P<field>\w+)(?:\[\d+\])?)?`)?$")
_NAMED = re.compile(r"field `(?P<field>\w+)`")


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
    body: bytes,
    *,
    batch: bool,
    ndjson: bool,
    symbols: Collection[str],
    conditions: ConditionRules,
    now: datetime,
) -> list[InboxRow]:
    """Validate a whole request body; return inbox rows in list order, or raise for all of it."""
    sent = body
    if ndjson:
        body = b"[" + b",".join(line for line in sent.splitlines() if line.strip()) + b"]"
    try:
        ticks = _MANY.decode(body) if batch else [_ONE.decode(body)]
    except msgspec.ValidationError:
        try:
            refusal = _refusal(body, batch=batch, symbols=symbols)
        except msgspec.DecodeError as exc:  # malformed further on than the first invalid item
            raise _malformed(sent, exc, ndjson=ndjson) from None
        except RecursionError:  # walking a hostile, deeply nested body item by item
            raise MalformedBody("malformed JSON: nested too deeply") from None
        raise refusal from None
    except msgspec.DecodeError as exc:
        raise _malformed(sent, exc, ndjson=ndjson) from None
    if not ticks:
        raise InvalidTicks([], "an empty batch stores nothing; send at least one tick")
    errors = _nul_errors(ticks) if NUL_ESCAPE in body else []
    return _rows(ticks, symbols, conditions, now, errors)


def _rows(
    ticks: list[Tick],
    symbols: Collection[str],
    conditions: ConditionRules,
    now: datetime,
    errors: list[TickError],
) -> list[InboxRow]:
    latest = now + MAX_FUTURE
    for i, t in enumerate(ticks):
        if isinstance(t.ts, int):
            try:
                t.ts = EPOCH + timedelta(milliseconds=t.ts)
            except OverflowError:
                errors.append(TickError(i, "ts", "epoch milliseconds out of range"))
                continue
        if t.ts > latest:
            errors.append(TickError(i, "ts", "is more than 5 minutes in the future"))
        elif t.ts < EARLIEST:
            errors.append(TickError(i, "ts", "is before the year 1 in UTC"))
        if t.symbol not in symbols:
            errors.append(_unknown(i, t.symbol))
        if t.conditions:
            errors.extend(
                TickError(i, "conditions", f"unknown sale condition {code}")
                for code in dict.fromkeys(t.conditions)
                if code not in conditions
            )
    if errors:
        raise InvalidTicks(sorted(errors, key=lambda e: (e.index, e.field)))
    return [
        (
            *msgspec.structs.astuple(t)[:6],
            t.conditions or None,
            *(rules_of(t.conditions, conditions) if t.conditions else REGULAR),
        )
        for t in ticks
    ]


def _refusal(body: bytes, *, batch: bool, symbols: Collection[str]) -> InvalidTicks:
    """Walk a refused body item by item, so the 422 names every bad tick."""
    if not batch:
        return InvalidTicks(_item_errors(0, body, symbols) or [_shape(0)])
    try:
        items = _ITEMS.decode(body)
    except msgspec.ValidationError:
        return InvalidTicks([], "the body must be a JSON array of ticks (or NDJSON)")
    return InvalidTicks([e for i, raw in enumerate(items) for e in _item_errors(i, raw, symbols)])


def _item_errors(index: int, raw: bytes | msgspec.Raw, symbols: Collection[str]) -> list[TickError]:
    """The first contract violation of one item, and its unknown symbol if it has one."""
    errors = []
    try:
        _ONE.decode(raw)
    except msgspec.ValidationError as exc:
        errors.append(_explain(index, str(exc)))
    try:
        item = msgspec.json.decode(raw)
    except msgspec.ValidationError:  # a number beyond float range, already reported
        item = None
    symbol = item.get("symbol") if isinstance(item, dict) else None
    if isinstance(symbol, str) and symbol not in symbols:
        errors.append(_unknown(index, symbol))
    return sorted(errors, key=lambda e: e.field)


def _explain(index: int, message: str) -> TickError:
    where = _WHERE.match(message)
    assert where is not None
    text, field = where["message"], where["field"] or ""
    if not field:
        named = _NAMED.search(text)
        if named is None:
            return _shape(index)
        field = named["field"]
        reason = "is not a tick field" if "unknown field" in text else "is required"
    elif field == "ts":
        reason = _TS_REASON
    elif field == "conditions":
        reason = _CONDITIONS_REASON
    elif text == "Number out of range" or text.startswith("Expected `float` <="):
        reason = "must be a finite number"
    elif text.startswith("Expected `float` >"):
        reason = "must be greater than 0"
    elif text.startswith("Expected `float`"):
        reason = "must be a JSON number"
    else:
        reason = text[0].lower() + text[1:]
    return TickError(index, field, reason)


def _shape(index: int) -> TickError:
    return TickError(index, "", "must be a JSON object with the tick fields")


def _unknown(index: int, symbol: str) -> TickError:
    return TickError(index, "symbol", f"unknown symbol {symbol!r}")


def _nul_errors(ticks: list[Tick]) -> list[TickError]:
    return [
        TickError(i, field, "must not contain NUL characters")
        for i, t in enumerate(ticks)
        for field in ("source", "event_id")
        if "\x00" in getattr(t, field)
    ]


def _malformed(sent: bytes, exc: msgspec.DecodeError, *, ndjson: bool) -> MalformedBody:
    if ndjson:  # name the first bad line
        for number, line in enumerate(sent.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                msgspec.json.decode(line)
            except (msgspec.DecodeError, RecursionError) as line_exc:
                return MalformedBody(f"malformed NDJSON on line {number}: {line_exc}")
    return MalformedBody(f"malformed JSON: {exc}")
