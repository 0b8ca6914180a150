"""Every error leaves as JSON with a clear message: 4xx for the caller's mistakes, 503 while the
database is away, a bare 500 (no stack trace) for our own."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import psycopg
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from serving.ticks import InvalidTicks, MalformedBody

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
    detail: str
    errors: list[Problem] = []


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
