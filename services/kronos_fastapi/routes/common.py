"""What the route modules share: access to the app's objects and the documented error responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from ..catalog import ModelCatalog
from ..errors import UnsupportedMediaType
from ..metrics import ServiceMetrics
from ..schemas import ErrorResponse
from ..service import ForecastService
from ..settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_service(request: Request) -> ForecastService:
    return request.app.state.service


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def get_catalog(request: Request) -> ModelCatalog:
    return request.app.state.models


ServiceDep = Annotated[ForecastService, Depends(get_service)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed JSON (invalid_json)",
        401: "Missing or wrong API key, when KRONOS_API_KEYS is set (unauthorized)",
        403: "Client not in KRONOS_ALLOWED_CLIENTS (forbidden)",
        413: "Body larger than KRONOS_MAX_REQUEST_SIZE_MB (payload_too_large)",
        415: "A Content-Type other than JSON (unsupported_media_type); none at all is read as JSON",
        422: "Valid JSON that is not a valid request; names the field and row (validation_error)",
        429: "Rate limit exceeded; see Retry-After (rate_limited)",
        500: "Unexpected server error (internal_error)",
        503: "Model not loaded yet or failed to load (model_not_ready); forecast queue full, see Retry-After "
        "(queue_full); a series too big for the device even alone (out_of_memory)",
        504: "Forecast (queue wait included) took longer than KRONOS_REQUEST_TIMEOUT_S (timeout)",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}


def require_json(request: Request) -> None:
    """A JSON route's body must be declared JSON (``application/json``, ``application/*+json``) or not
    declared at all (read as JSON, as clients that send no Content-Type expect); else a 415."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"Content-Type: {media or 'empty'} is not JSON; send the body as application/json",
        {"field": "Content-Type", "message": f"{media or 'empty'} is not JSON", "accepted": ["application/json"]},
    )
