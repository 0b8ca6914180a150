"""How Polygon/Massive answers when it has nothing to give, so that its clients raise their own
exceptions on our answers too: `{status: "ERROR", request_id, error}` for a refused request (with
the HTTP status our other routes use: 401, 422, 503) and `{status: "NOT_FOUND", request_id,
message}` with a 404 when there is no data. A router whose routes take `PolygonRoute` as their
`route_class` answers every refusal in that shape instead of `serving.errors.Refusal`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal

from fastapi import Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from serving.errors import DATABASE_UNAVAILABLE, refusals

log = logging.getLogger(__name__)


class PolygonError(BaseModel):
    """Polygon's answer to a request it refuses."""

    status: Literal["ERROR"]
    request_id: str
    error: str


class NotFound(BaseModel):
    """Polygon's answer when there is no data."""

    status: Literal["NOT_FOUND"]
    request_id: str
    message: str


def request_id() -> str:
    return uuid.uuid4().hex


def not_found(message: str = "Data not found.") -> JSONResponse:
    body = NotFound(status="NOT_FOUND", request_id=request_id(), message=message)
    return JSONResponse(body.model_dump(), status_code=status.HTTP_404_NOT_FOUND)


def polygon_error(code: int, error: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = PolygonError(status="ERROR", request_id=request_id(), error=error)
    return JSONResponse(body.model_dump(), status_code=code, headers=headers)


def polygon_refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a Polygon route that can answer these refusals (as `refusals` says,
    in Polygon's body)."""
    return {code: {**meaning, "model": PolygonError} for code, meaning in refusals(*codes).items()}


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"model": NotFound, "description": "No data for this ticker"}
}


def _invalid(exc: RequestValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


class PolygonRoute(APIRoute):
    """A route whose refusals (credentials, validation, the database away) leave in Polygon's
    error shape, with the status and headers they have everywhere else."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handle(request)
            except HTTPException as exc:
                return polygon_error(exc.status_code, str(exc.detail), exc.headers)
            except RequestValidationError as exc:
                return polygon_error(status.HTTP_422_UNPROCESSABLE_CONTENT, _invalid(exc))
            except DATABASE_UNAVAILABLE as exc:
                log.warning(
                    "database unavailable during %s %s: %s",
                    request.method,
                    request.url.path,
                    type(exc).__name__,
                )
                return polygon_error(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    "database unavailable, retry shortly",
                    {"Retry-After": "1"},
                )

        return answer
