"""Who may write and read: HTTP basic auth for the write side (ingest and /internal/*), and, when
READ_API_KEYS is set, an API key on reads (`Authorization: Bearer KEY`, as Polygon clients send,
or `?apiKey=KEY`, for a browser's EventSource and WebSocket). Constant-time, never logged."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Query, status
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from core.config import Settings
from serving.deps import AppSettings

_basic = HTTPBasic(realm="ingest", auto_error=False)
_bearer = HTTPBearer(auto_error=False, description="a read API key, when READ_API_KEYS is set")


async def require_ingest_credentials(
    settings: AppSettings, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> None:
    if settings.dev_no_auth:
        return
    # create_app refuses to start without both; were they missing, nothing would match.
    expected_user = (settings.ingest_username or "").encode()
    expected_password = (
        settings.ingest_password.get_secret_value() if settings.ingest_password else ""
    ).encode()
    given_user = credentials.username.encode() if credentials else b""
    given_password = credentials.password.encode() if credentials else b""
    # Both comparisons always run, so timing says nothing about which part was wrong.
    user_ok = secrets.compare_digest(given_user, expected_user)
    password_ok = secrets.compare_digest(given_password, expected_password)
    if not (credentials and expected_user and expected_password and user_ok and password_ok):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="valid ingest credentials are required (HTTP basic auth)",
            headers={"WWW-Authenticate": 'Basic realm="ingest"'},
        )


IngestAuth = Depends(require_ingest_credentials)


def read_key_accepted(settings: Settings, key: str | None) -> bool:
    """Whether `key` may read: any (or none) while READ_API_KEYS is unset, else one of them."""
    keys = settings.read_keys
    if not keys:
        return True
    given = (key or "").encode()
    # Every key is compared, so timing says nothing about which one came close.
    return sum(secrets.compare_digest(given, k.encode()) for k in keys) > 0


async def require_read_key(
    settings: AppSettings,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[
        str | None,
        Query(alias="apiKey", description="a read API key, when READ_API_KEYS is set"),
    ] = None,
) -> None:
    if not read_key_accepted(settings, bearer.credentials if bearer else api_key):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid read API key is required (Authorization: Bearer KEY, or ?apiKey=KEY)",
            headers={"WWW-Authenticate": "Bearer"},
        )


ReadAuth = Depends(require_read_key)
