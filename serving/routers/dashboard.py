"""`GET /dashboard`: the operator page. Its script is an ordinary API client (see
`serving/dashboard/`); every asset is served from here, nothing from the internet."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"

router = APIRouter(tags=["dashboard"])


@cache
def _page() -> str:
    return (ASSETS / "index.html").read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    dagster_url = html.escape(request.app.state.settings.dagster_url, quote=True)
    return HTMLResponse(_page().replace("__DAGSTER_URL__", dagster_url))
