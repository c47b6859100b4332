"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their scripts and styles served by this app
from the ``fastapi-offline`` package, so the pages work without internet access (FastAPI's own
pages load them from a CDN). The assets are one route, ``/docs/assets/{name}``, in the metrics.

ReDoc's script itself still names one outside file, its sidebar logo on cdn.redoc.ly: it is served
with that address replaced by an inline image, so a browser showing ``/redoc`` asks no other host.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from ..errors import NotFound

ASSET_FOLDER = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
TITLE = "Kronos forecasting service"
# ReDoc's sidebar logo ("API docs by Redocly"), fetched from its CDN by the script: an inline image instead
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_INLINE_LOGO = b"data:image/svg+xml,%3Csvg%20xmlns='http://www.w3.org/2000/svg'/%3E"
_PATCHED: dict[str, bytes] = {}

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
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no documentation asset {name!r}; there are {', '.join(sorted(ASSETS))}")
    headers = {"Cache-Control": "public, max-age=86400"}
    if name == "redoc.standalone.js":
        if name not in _PATCHED:
            _PATCHED[name] = (ASSET_FOLDER / name).read_bytes().replace(_REDOC_LOGO, _INLINE_LOGO)
        return Response(_PATCHED[name], media_type=ASSETS[name], headers=headers)
    return FileResponse(ASSET_FOLDER / name, media_type=ASSETS[name], headers=headers)
