"""Request bodies read within bounds, by the routes that take one (ingest, /internal/agg-update):
a size limit enforced while reading (`413` from Content-Length before the first byte, or as soon
as a chunked body passes it) and, for ingest, a budget of body bytes in flight per API process
(`503` with Retry-After past it), so that no client makes the API hold more than it allows.

These routes read their body themselves, after their dependencies: FastAPI reads and parses a
declared body parameter before it runs any dependency, so credentials would be checked only once
the whole body is in memory. They document the body they read with `request_body`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from core.ticks import MalformedBody

# How long a refused client waits: about the time a batch at the body limit takes to be committed
# and give its share of the budget back (0.7-1.1 s measured for 10 MiB, 84k ticks, 2 cores).
BUSY_RETRY_SECONDS = 1

Model = TypeVar("Model", bound=BaseModel)
Reserve = Callable[[int], None]


class InflightBytes:
    """The body bytes one API process holds at once for its requests, bounded: each request
    reserves its body (Content-Length up front, or chunk by chunk as a chunked body is read) and
    holds it until its answer; a request that would pass the bound is refused at once with a
    `503`, so memory stays flat however many clients send at the same time."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._held = 0

    @contextlib.contextmanager
    def reservation(self) -> Iterator[Reserve]:
        """A `reserve(n)` that takes `n` more bytes (a `503` past the bound); on leaving, all it
        took is given back."""
        taken = 0

        def reserve(size: int) -> None:
            nonlocal taken
            if self._held + size > self._capacity:
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    detail="too many ingest bytes in flight on this server, retry shortly",
                    headers={"Retry-After": str(BUSY_RETRY_SECONDS)},
                )
            self._held += size
            taken += size

        try:
            yield reserve
        finally:
            self._held -= taken


def _unreserved(_: int) -> None:
    return None


async def read_body(request: Request, limit: int, reserve: Reserve = _unreserved) -> bytes:
    """The whole body, at most `limit` bytes (a `413` as soon as it would pass them), its bytes
    reserved before they are read."""
    declared = request.headers.get("content-length")
    length = int(declared) if declared is not None and declared.isdigit() else None
    if length is not None:
        if length > limit:
            raise _too_large(limit)
        reserve(length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if length is None:
            reserve(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, detail=f"body larger than the limit of {limit} bytes"
    )


def parsed(model: type[Model], body: bytes) -> Model:
    """`body` as a `model`: a `400` when it is not JSON at all, a `422` listing each problem when
    it does not fit, as FastAPI answers for a declared body."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise MalformedBody(f"malformed JSON: {problems[0]['ctx']['error']}") from None
        raise RequestValidationError(
            [{**p, "loc": ("body", *p["loc"])} for p in problems]
        ) from None


def request_body(content: dict[str, Any]) -> dict[str, Any]:
    """The `openapi_extra` documenting the body a route reads itself, by media type."""
    return {"requestBody": {"required": True, "content": content}}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with the models it nests written in place: a body documented by hand
    has no entry among the document's components for a reference to point to."""
    schema = model.model_json_schema()
    nested = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(nested[node["$ref"].rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return dict(resolve(schema))
