"""The forecast page at ``/``: static files from ``ui/`` (the page, its script and style, the vendored
chart library with its licence, an example CSV) and ``/ui/config.json``, what this server offers.

The page is a client like any other: its API calls go through the same keys, limits and error shape.
Only the page's own files are open without a key (the page has to load before a key can be typed).
Every file is served with a strict Content-Security-Policy: scripts, styles, fetches and images come
from this origin only, nothing inline, no frames, so the page works offline and behind any proxy.
``config.json`` lets the page show only what this server has (a model choice, the backtest, the Jobs
panel, a key field) without probing routes that may be missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from model.decoding.defaults import defaults as sampling_defaults

from .errors import NotFound
from .model_specs import model_contexts
from .schemas import SingleRequest
from .settings import Settings

UI_DIR = Path(__file__).resolve().parent / "ui"
PAGE = "/"
ASSET_PREFIX = "/ui/"
CONFIG = ASSET_PREFIX + "config.json"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# Request fields a server may offer to return the sample paths (the page shows the option only then).
_SAMPLE_FLAGS = ("return_samples", "include_samples", "return_paths", "sample_paths")


def _assets() -> dict[str, Path]:
    """URL path → file, for every servable file under ``ui/`` (a fixed set: nothing else is reachable)."""
    files = {}
    for path in sorted(UI_DIR.rglob("*")):
        if path.is_file() and path.suffix in _MEDIA_TYPES:
            files[ASSET_PREFIX + path.relative_to(UI_DIR).as_posix()] = path
    return files


ASSETS = _assets()
OPEN_PATHS = (PAGE, CONFIG, *ASSETS)

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> FileResponse:
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=headers)


@router.api_route(PAGE, methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return _file(UI_DIR / "index.html")


@router.get(CONFIG)
async def config(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    # The OpenAPI document lists every route, whatever the FastAPI version's router objects look like
    # (newer versions keep included routers as objects without a ``path``).
    routes = set(request.app.openapi().get("paths", {}))
    jobs = settings.jobs_enabled and "/v1/jobs" in routes
    body: dict[str, Any] = {
        "api_key_required": bool(settings.api_keys),
        "models": "/v1/models" in routes,
        "backtest": "/v1/backtest" in routes,
        "sample_flag": next((name for name in _SAMPLE_FLAGS if name in SingleRequest.model_fields), None),
        "model_field": "model" in SingleRequest.model_fields,
        "default_pred_len": settings.default_pred_len,
        "max_pred_len": settings.max_pred_len or settings.max_context,
        "max_sample_count": settings.max_sample_count,
        "max_rows": settings.max_rows,
        # the default model's context: the page sends at most max_context - pred_len rows by default
        "max_context": model_contexts(settings)[None],
        # the one rule of model/decoding/defaults.py: T and top_p the page leaves empty get these
        "sampling": sampling_defaults(),
        # /v1/jobs (off with KRONOS_JOBS_ENABLED=false): the page's Jobs panel shows only then, with its limits
        "jobs": jobs,
        "jobs_max_upload_bytes": settings.jobs_max_upload_bytes if jobs else None,
        "jobs_max_items": settings.jobs_max_items if jobs else None,
    }
    return JSONResponse(body, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@router.get(ASSET_PREFIX + "{name:path}")
async def asset(name: str) -> FileResponse:
    path = ASSETS.get(ASSET_PREFIX + name)
    if path is None:
        raise NotFound(f"no page file {ASSET_PREFIX}{name}")
    return _file(path)
