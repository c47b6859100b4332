"""Prometheus metrics in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ..metrics import PROMETHEUS_CONTENT_TYPE
from .common import MetricsDep

router = APIRouter(prefix="/v1", tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}, "description": "text exposition format"}},
)
async def metrics(registry: MetricsDep) -> Response:
    return Response(registry.render(), media_type=PROMETHEUS_CONTENT_TYPE)
