"""``GET /v1/models``: every model of this instance, its source, resolved revision and state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..schemas import ModelsResponse
from .common import CatalogDep, error_responses

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    response_model=ModelsResponse,
    summary="The served models: name, source, resolved revision, parameters, max context, device and state",
    responses=error_responses(401, 403),
)
async def list_models(catalog: CatalogDep) -> dict[str, Any]:
    return {
        "default": catalog.default_name,
        "models": catalog.described(),
    }
