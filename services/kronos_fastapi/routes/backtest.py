"""``POST /v1/backtest``: rolling-origin evaluation of the forecast on the caller's own history."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..backtesting import backtest_result, parse_backtest
from ..schemas import BacktestResponse
from .common import CatalogDep, SettingsDep, error_responses, require_json
from .predict import _PARSE_OFF_LOOP_BYTES, _forecast, _request_body, _served

router = APIRouter(prefix="/v1", tags=["backtest"])


@router.post(
    "/backtest",
    summary="Backtest the forecast on your own history, against naive baselines",
    description="The single request's fields plus `windows` (default 10), `step` (default pred_len), `lookback` "
    "(default max_context - pred_len: no window slides) and `calibrate`. Window j (0 = newest) has origin "
    "N - pred_len - j·step, forecasts from rows [max(0, origin - lookback), origin) and is scored on rows "
    "[origin, origin + pred_len). "
    "The windows are one batch of forecasts: they count against the queue and the timeout like a batch request.",
    response_model=BacktestResponse,
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503, 504),
    openapi_extra=_request_body("BacktestRequest"),
)
async def backtest(request: Request, catalog: CatalogDep, settings: SettingsDep) -> JSONResponse:
    started = time.perf_counter()
    require_json(request)
    body = await request.body()
    if len(body) > _PARSE_OFF_LOOP_BYTES:
        parsed = await asyncio.to_thread(parse_backtest, body, settings)
    else:
        parsed = parse_backtest(body, settings)
    request.state.rows, request.state.pred_len = parsed.full.rows, parsed.pred_len
    request.state.items = len(parsed.plan.windows)
    # every window names the request's model (None: the default one)
    forecasts, (service, *_) = await _forecast(request, catalog, parsed.plan.items, "backtest")
    result = await asyncio.to_thread(backtest_result, parsed, forecasts)
    return JSONResponse({**result, **_served(service, started)})
