"""HTTP basic auth for the write side (ingest and /internal/*): constant-time, never logged."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from serving.deps import AppSettings

_basic = HTTPBasic(realm="ingest", auto_error=False)


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
