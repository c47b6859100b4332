"""``/v1/predict/single`` and ``/v1/predict/batch``: both request shapes, answered in their own shape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from model import Forecast

from ..backtesting import calibration_plan, calibration_result
from ..catalog import ModelCatalog
from ..errors import ClientDisconnected
from ..forecasting import ParsedRequest, parse_batch, parse_single
from ..responses import forecast_result, legacy_result, partial_results
from ..schemas import BatchResponse, LegacySingleResponse, SingleResponse
from ..series_input import PreparedSeries
from ..service import ForecastService
from ..settings import Settings
from .common import CatalogDep, SettingsDep, error_responses, require_json

router = APIRouter(prefix="/v1", tags=["predict"])

# Bodies above this are parsed in a worker thread, so a big JSON body does not stall health checks.
_PARSE_OFF_LOOP_BYTES = 256 * 1024
_ERRORS = error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503, 504)


def _request_body(*schemas: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in schemas]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": refs}}}}}


async def _parse(
    request: Request, parse: Callable[[bytes, Settings], ParsedRequest], settings: Settings
) -> ParsedRequest:
    require_json(request)
    body = await request.body()
    # An exchange calendar's first use builds its sessions (about a second): off the loop too.
    if len(body) > _PARSE_OFF_LOOP_BYTES or b'"calendar"' in body:
        parsed = await asyncio.to_thread(parse, body, settings)
    else:
        parsed = parse(body, settings)
    request.state.rows, request.state.pred_len, request.state.items = parsed.rows, parsed.pred_len, len(parsed.items)
    return parsed


async def _until_disconnected(request: Request) -> None:
    """Return when the client hangs up. The body has been read, so the next message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _forecast(
    request: Request,
    catalog: ModelCatalog,
    items: Sequence[PreparedSeries],
    endpoint: str,
    legacy: bool = False,
    partial: bool = False,
) -> tuple[list[Forecast], list[ForecastService]]:
    """Each item's forecast by its model, given up as soon as the client disconnects: its series leave
    the queue, or their batch at the next decode step, so nobody decodes for a client that is gone.
    ``partial``: each item's Forecast or its own ServiceError (``ModelCatalog.forecast``)."""
    models = [item.model for item in items]
    for i, name in enumerate(models):  # an unknown model is refused before anything is queued
        catalog.get(name, _model_field(endpoint, i, legacy))
    forecast = asyncio.ensure_future(catalog.forecast([item.series for item in items], models, endpoint, partial))
    hangup = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait((forecast, hangup), return_when=asyncio.FIRST_COMPLETED)
        if not forecast.done() and hangup.exception() is None:
            forecast.cancel()
            await asyncio.wait((forecast,))
            raise ClientDisconnected("the client disconnected before its forecast was ready")
        return await forecast  # done, or the disconnect watch failed: just wait
    finally:
        hangup.cancel()
        forecast.cancel()  # a no-op once done; reached early only when this request is cancelled


def _model_field(endpoint: str, index: int, legacy: bool) -> str:
    return "model" if endpoint in ("single", "backtest") else f"{'items' if legacy else 'batch'}[{index}].model"


def _served(service: ForecastService, started: float) -> dict[str, Any]:
    return {
        "device": service.device_label,
        "model": service.model.version if service.model else "",
        "model_name": service.name,
        "model_revision": service.model.revision if service.model else None,
        "precision": service.spec.precision,
        "instance": service.settings.instance_name,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
    }


@router.post(
    "/predict/single",
    summary="Forecast one series",
    description='Body: the guide\'s `{"data": [[open, high, low, close], …], "pred_len": 10}` (rows may add '
    'volume and amount, or be objects), or the original service\'s `{"candles", "timestamps", '
    '"prediction_timestamps", "overrides"}`, answered in that service\'s shape.',
    response_model=SingleResponse | LegacySingleResponse,
    responses=_ERRORS,
    openapi_extra=_request_body("SingleRequest", "LegacySingleRequest"),
)
async def predict_single(
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
) -> JSONResponse:
    started = time.perf_counter()
    parsed = await _parse(request, parse_single, settings)
    item = parsed.items[0]
    calibrating = item.request is not None and item.request.calibration is not None
    past = calibration_plan(item, item.request, settings) if calibrating else None
    items = [item, *past.items] if past else [item]
    (forecast, *past_forecasts), (service, *_) = await _forecast(request, catalog, items, "single")
    if parsed.legacy:
        model = service.model
        return JSONResponse(legacy_result(item, forecast, model.version, model.tokenizer_version))
    body = forecast_result(item, forecast)
    if past is not None:
        body["calibration"] = calibration_result(past, item, item.request, forecast, past_forecasts)
    return JSONResponse({**body, **_served(service, started)})


@router.post(
    "/predict/batch",
    summary="Forecast several series in one model batch",
    description='Body: `{"batch": [<single request with an optional "id">, …]}` or the original service\'s '
    '`{"items": [...]}` (answered by a JSON array). Items may differ in length, pred_len and sampling settings; '
    "answers come in item order. Every invalid item is reported (one 422 listing them all), or, with "
    '`"partial": true`, each item is answered by its forecast or its own error object (invalid, failed, past '
    "the deadline) and what finished is kept.",
    response_model=BatchResponse | list[LegacySingleResponse],
    responses=_ERRORS,
    openapi_extra=_request_body("BatchRequest", "LegacyBatchRequest"),
)
async def predict_batch(
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
) -> JSONResponse:
    started = time.perf_counter()
    parsed = await _parse(request, parse_batch, settings)
    forecasts, services = await _forecast(request, catalog, parsed.items, "batch", parsed.legacy, parsed.partial)
    catalog.default.metrics.batch_items.observe(len(parsed.items))
    if parsed.partial:
        return JSONResponse({**partial_results(parsed, forecasts, services), **_served(services[0], started)})
    if parsed.legacy:
        return JSONResponse(
            [
                legacy_result(item, f, s.model.version, s.model.tokenizer_version, i, True)
                for i, (item, f, s) in enumerate(zip(parsed.items, forecasts, services))
            ]
        )
    results = [
        {**forecast_result(item, f, i, True), "model_name": s.name, "index": i, "id": item.series_id}
        for i, (item, f, s) in enumerate(zip(parsed.items, forecasts, services))
    ]
    return JSONResponse({"count": len(results), "results": results, **_served(services[0], started)})
