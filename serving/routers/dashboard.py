"""`GET /dashboard`: the operator page. Its script is an ordinary API client (see
`serving/dashboard/`); every asset is served from here, nothing from the internet."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from serving.deps import AppSettings

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"

router = APIRouter(tags=["dashboard"])


@cache
def _page() -> str:
    return (ASSETS / "index.html").read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(settings: AppSettings) -> HTMLResponse:
    dagster_url = html.escape(settings.dagster_url, quote=True)
    return HTMLResponse(_page().replace("__DAGSTER_URL__", dagster_url))
