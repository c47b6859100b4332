"""Prometheus metrics in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ..metrics import PROMETHEUS_CONTENT_TYPE
from .common import CatalogDep, MetricsDep

router = APIRouter(prefix="/v1", tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}, "description": "text exposition format"}},
)
async def metrics(registry: MetricsDep, catalog: CatalogDep) -> Response:
    for service in catalog.services.values():
        service.check_health()  # kronos_model_ready and kronos_device_info's state as of now
    return Response(registry.render(), media_type=PROMETHEUS_CONTENT_TYPE)
