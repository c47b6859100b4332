"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their scripts and styles served by this app
from the ``fastapi-offline`` package, so the pages work without internet access (FastAPI's own
pages load them from a CDN). The assets are one route, ``/docs/assets/{name}``, in the metrics.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from ..errors import NotFound

ASSET_FOLDER = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
TITLE = "Kronos forecasting service"

router = APIRouter(include_in_schema=False)


def _asset(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/docs/assets/{name}"


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}/openapi.json"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=_asset(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset(request, "swagger-ui.css"),
        swagger_favicon_url=_asset(request, "favicon.png"),
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{TITLE} - ReDoc",
        redoc_js_url=_asset(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset(request, "favicon.png"),
        with_google_fonts=False,
    )


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise NotFound(f"no documentation asset {name!r}; there are {', '.join(sorted(ASSETS))}")
    return FileResponse(
        ASSET_FOLDER / name, media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"}
    )
