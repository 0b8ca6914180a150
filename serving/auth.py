"""HTTP basic auth for the write side (ingest and /internal/*): constant-time, never logged."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

_basic = HTTPBasic(realm="ingest", auto_error=False)


async def require_ingest_credentials(
    request: Request, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> None:
    settings = request.app.state.settings
    if settings.dev_no_auth:
        return
    expected_user = settings.ingest_username.encode()
    expected_password = settings.ingest_password.get_secret_value().encode()
    given_user = credentials.username.encode() if credentials else b""
    given_password = credentials.password.encode() if credentials else b""
    # Both comparisons always run, so timing says nothing about which part was wrong.
    user_ok = secrets.compare_digest(given_user, expected_user)
    password_ok = secrets.compare_digest(given_password, expected_password)
    if not (credentials and user_ok and password_ok):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="valid ingest credentials are required (HTTP basic auth)",
            headers={"WWW-Authenticate": 'Basic realm="ingest"'},
        )


# Dependencies are coroutines: FastAPI would run a plain function in its thread pool, a thread hop
# on every request.
IngestAuth = Depends(require_ingest_credentials)
