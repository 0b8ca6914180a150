"""Every error leaves as JSON with a clear message (one body, `Refusal`): 4xx for the caller's
mistakes, 503 while the database is away or the server is full, a bare 500 (no stack trace) for
our own. Routes document the refusals they can answer with `refusals(...)`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from core.ticks import InvalidTicks, MalformedBody

log = logging.getLogger(__name__)

# Lost connections, a server going down, a pool with no connection to give, a schema not migrated.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.UndefinedTable,
    PoolTimeout,
)


class Problem(BaseModel):
    index: int
    field: str
    reason: str


class Refusal(BaseModel):
    # `errors` is always sent (empty unless listed), so the schema says it is required.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    detail: str
    errors: list[Problem] = []


def _header(description: str, schema: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": schema}


# What each refusal means, for the OpenAPI document; the handlers below send them.
_MEANINGS: dict[int, dict[str, Any]] = {
    status.HTTP_400_BAD_REQUEST: {"description": "The body is not JSON (or NDJSON) at all"},
    status.HTTP_401_UNAUTHORIZED: {
        "description": "Missing or wrong credentials",
        "headers": {"WWW-Authenticate": _header("The scheme to use", {"type": "string"})},
    },
    status.HTTP_404_NOT_FOUND: {"description": "Unknown symbol"},
    status.HTTP_413_CONTENT_TOO_LARGE: {"description": "Body above the configured limit"},
    status.HTTP_422_UNPROCESSABLE_CONTENT: {"description": "Invalid request; nothing was done"},
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "description": "Database unavailable, or (ingest) too many bytes in flight; retry",
        "headers": {"Retry-After": _header("Seconds to wait", {"type": "integer"})},
    },
}


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer these refusals."""
    return {code: {"model": Refusal, **_MEANINGS[code]} for code in codes}


def _refusal(
    code: int,
    detail: str,
    errors: list[Problem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = Refusal(detail=detail, errors=errors or [])
    return JSONResponse(body.model_dump(), status_code=code, headers=headers)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _refusal(exc.status_code, str(exc.detail), headers=exc.headers)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        Problem(index=0, field=".".join(str(p) for p in e["loc"]), reason=e["msg"])
        for e in exc.errors()
    ]
    return _refusal(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid request", problems)


async def _malformed(_: Request, exc: Exception) -> JSONResponse:
    return _refusal(status.HTTP_400_BAD_REQUEST, str(exc))


async def _invalid_ticks(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidTicks)
    problems = [Problem(index=e.index, field=e.field, reason=e.reason) for e in exc.errors]
    return _refusal(
        status.HTTP_422_UNPROCESSABLE_CONTENT, f"batch refused, nothing stored: {exc}", problems
    )


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "database unavailable during %s %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return _refusal(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "database unavailable, retry shortly",
        headers={"Retry-After": "1"},
    )


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _refusal(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(MalformedBody, _malformed)
    app.add_exception_handler(InvalidTicks, _invalid_ticks)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_down)
    app.add_exception_handler(Exception, _internal)
