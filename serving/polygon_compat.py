"""What the Polygon/Massive-compatible routers share: request ids, and Polygon's error body
(`{"status": "ERROR", "request_id", "error"}` with the HTTP status) for the refusals of their
routes, so the official client raises its own exceptions on them as it does against Polygon."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Generic, Literal, TypeVar

from fastapi import Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from serving.deps import known_symbol
from serving.errors import refusals
from serving.symbols import SymbolRegistry

Item = TypeVar("Item", bound=BaseModel)


def request_id() -> str:
    return uuid.uuid4().hex


# A bar's prices, volume and VWAP in Polygon's field names, as snapshots send a day (no docstring:
# it would become the model's description in the OpenAPI document).
class SnapshotBar(BaseModel):
    o: float | None
    h: float | None
    l: float | None  # noqa: E741 - Polygon's field name
    c: float | None
    v: float
    vw: float | None


class Bar(SnapshotBar):
    """Prices are null when no trade of the bar may set them (sale conditions)."""

    n: int
    t: int
    """Bar start, Unix milliseconds (UTC)."""


class PolygonList(BaseModel, Generic[Item]):
    """A page of a Polygon listing; a route's answer names it by subclassing it (no docstring of
    its own: it would become the model's description in the OpenAPI document)."""

    results: list[Item]
    status: str
    request_id: str
    count: int
    next_url: str | None = None
    """Absent on the last page."""


class PolygonError(BaseModel):
    status: Literal["ERROR"]
    request_id: str
    error: str


class PolygonNotFound(BaseModel):
    """Polygon's answer about something it does not have."""

    status: Literal["NOT_FOUND"]
    request_id: str
    message: str


_MEANINGS = {
    status.HTTP_400_BAD_REQUEST: "Invalid parameters; nothing was done",
    status.HTTP_401_UNAUTHORIZED: "Missing or wrong read API key",
    status.HTTP_404_NOT_FOUND: "Unknown ticker",
}


async def registered(registry: SymbolRegistry, symbol: str) -> bool:
    """Whether `symbol` is registered (Polygon lists nothing for an unknown ticker)."""
    try:
        await known_symbol(registry, symbol)
    except HTTPException:
        return False
    return True


def polygon_refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a Polygon-compatible route: these codes in Polygon's error body, and
    the platform's 503 while the database is away."""
    answers: dict[int | str, dict[str, Any]] = {
        code: {
            "model": PolygonNotFound if code == status.HTTP_404_NOT_FOUND else PolygonError,
            "description": _MEANINGS[code],
        }
        for code in codes
    }
    return {**answers, **refusals(503)}


def polygon_error(
    code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: BaseModel
    if code == status.HTTP_404_NOT_FOUND:
        body = PolygonNotFound(status="NOT_FOUND", request_id=request_id(), message=message)
    else:
        body = PolygonError(status="ERROR", request_id=request_id(), error=message)
    return JSONResponse(body.model_dump(), status_code=code, headers=headers)


def _problems(exc: RequestValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'] if p != 'query')}: {e['msg']}" for e in exc.errors()
    )


class PolygonRoute(APIRoute):
    """A route whose refusals (bad parameters, a missing key, an unknown ticker) answer in
    Polygon's error body; bad parameters are a 400, as Polygon answers them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def polygon_handler(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                return polygon_error(status.HTTP_400_BAD_REQUEST, _problems(exc))
            except HTTPException as exc:
                return polygon_error(exc.status_code, str(exc.detail), exc.headers)

        return polygon_handler
