"""Backtests and calibrated bands: a request's own history cut into forecast windows (the maths is in
``model/evaluation/``; this module turns requests into window forecasts and results into bodies).

The rules:

- **Windows** follow one contract: with N rows, window j (0 = newest) has origin
  ``N - pred_len - j * step``, forecasts from rows ``[max(0, origin - lookback), origin)`` and is scored
  on rows ``[origin, origin + pred_len)``.
- **Each window is the forecast ``/v1/predict/single`` gives** for its rows: its series is built by the
  very code that parses a single request (``new_series``), from the request with ``data`` and
  ``timestamps`` cut to the window and the window's seed (``seed + j`` when the request has a seed,
  else a random one, reported). Rows sent without timestamps therefore start the fixed calendar at the
  window's first row, as a single request of those rows would.
- **Windows sample as a single request does** (``band_defaults.sampling``, the one rule): with 20
  sample paths by default, a backtest's windows take the band defaults as a predict with as many paths
  does; the answer echoes them (``sampling``), and a window's rows, sample_count and seed reproduce it.
- **A backtest is a batch of forecasts**: its windows go through the batcher together, so they count
  against ``KRONOS_MAX_QUEUE`` and ``KRONOS_REQUEST_TIMEOUT_S`` as one batch request does; windows are
  at most ``KRONOS_MAX_BATCH_ITEMS``, and windows × sample_count at most ``KRONOS_MAX_BACKTEST_PATHS``.
- **Calibrated predict** (``"calibration": {"windows": K}``) runs K such windows (step = pred_len)
  beside the forecast itself, in the same batch: K + 1 forecasts for the price of one answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model import Forecast
from model.decoding.defaults import Sampling, rows_that_fit, sliding_note
from model.evaluation import (
    Window,
    backtest_report,
    backtest_windows,
    calibrate_forecast,
    rows_needed,
    symmetric_pairs,
    windows_needed,
)

from . import band_defaults
from .errors import InvalidRequest
from .forecasting import _validate, parse_json
from .model_specs import model_contexts
from .responses import float32_digits
from .schemas import SEED_LIMIT, BacktestRequest, SingleRequest
from .series_input import PreparedSeries, candles_array, new_series
from .settings import Settings

CLOSE = 3


@dataclass
class WindowForecasts:
    """Windows of one request and the series that forecast them, newest first."""

    windows: list[Window]
    items: list[PreparedSeries]
    actual: np.ndarray  # (W, pred_len) true closes
    contexts: list[np.ndarray]  # each window's input closes

    def paths(self, forecasts: list[Forecast], name: str) -> np.ndarray:
        """(W, S, pred_len) sample paths of the close; a 422 when the model gave non-finite values."""
        paths = np.stack([f.samples[:, :, CLOSE] for f in forecasts])
        if not np.isfinite(paths).all():
            raise InvalidRequest(
                f"{name}: the forecast is not finite: the candle values are too large or too degenerate for the model"
            )
        return paths


def _window_seed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else (seed + offset) % SEED_LIMIT


def _windows(
    request: SingleRequest,
    candles: np.ndarray,
    windows: list[Window],
    pred_len: int,
    seed_offset: int,
    settings: Settings,
    sampling: Sampling,
) -> WindowForecasts:
    items = []
    for window in windows:
        part = request.model_copy(
            update={
                "data": request.data[window.start : window.origin],
                "timestamps": None if request.timestamps is None else request.timestamps[window.start : window.origin],
                "pred_len": pred_len,
                "seed": _window_seed(request.seed, seed_offset + window.index),
                "quantiles": None,
                "calibration": None,
            }
        )
        seed = _window_seed(sampling.seed, seed_offset + window.index)
        items.append(new_series(part, settings, (), sampling.with_seed(seed)))
    actual = np.stack([candles[w.origin : w.origin + pred_len, CLOSE] for w in windows])
    contexts = [candles[w.start : w.origin, CLOSE] for w in windows]
    return WindowForecasts(windows, items, actual, contexts)


def _check_paths(field: str, forecasts: int, sample_count: int, settings: Settings) -> None:
    if forecasts > settings.max_batch_items:
        raise InvalidRequest(
            f"{field}: {forecasts} forecasts, more than the limit of {settings.max_batch_items} "
            "(KRONOS_MAX_BATCH_ITEMS): each window is one forecast of a batch"
        )
    if forecasts * sample_count > settings.max_backtest_paths:
        raise InvalidRequest(
            f"{field}: {forecasts} forecasts × sample_count {sample_count} = {forecasts * sample_count} sample paths, "
            f"more than the limit of {settings.max_backtest_paths} (KRONOS_MAX_BACKTEST_PATHS)"
        )


# --- /v1/backtest ---------------------------------------------------------------------------------


@dataclass
class Backtest:
    request: BacktestRequest
    full: PreparedSeries  # the whole history, as a single request would read it (timestamps, limits)
    pred_len: int
    step: int
    lookback: int
    quantiles: list[float]
    plan: WindowForecasts
    sampling: Sampling  # every window's settings (each with its own seed)
    notes: list[str]  # the windows slide (a lookback past the model's context)

    @property
    def series(self) -> list:
        return [item.series for item in self.plan.items]


def parse_backtest(body: bytes, settings: Settings) -> Backtest:
    request = _validate(BacktestRequest, parse_json(body))
    if request.calibration is not None:
        raise InvalidRequest('calibration: not a backtest field; send "calibrate": true to score calibrated bands')
    if request.return_paths:
        raise InvalidRequest(
            "return_paths: not a backtest field; POST a window's rows to /v1/predict/single with its seed and "
            '"return_paths": true for its sample paths'
        )
    full = new_series(request.model_copy(update={"quantiles": None, "calibration": None}), settings, ())
    candles = candles_array(request.data, (), "data")
    pred_len = full.series.pred_len
    step = request.step if request.step is not None else pred_len
    context = model_contexts(settings).get(request.model, settings.max_context)
    # by default every window fits its model's context (lookback + pred_len <= max_context): none slides
    lookback = request.lookback if request.lookback is not None else rows_that_fit(pred_len, context)
    _check_paths("windows", request.windows, request.sample_count, settings)
    needed = rows_needed(pred_len, request.windows, step)
    if len(candles) < needed:
        raise InvalidRequest(
            f"data: {len(candles)} rows, too few for {request.windows} windows of pred_len {pred_len}, {step} rows "
            f"apart: they need at least {needed} rows (2 of context before the oldest window + pred_len + "
            "(windows - 1) × step)",
            {"rows": len(candles), "rows_needed": needed},
        )
    quantiles = list(request.quantiles or [])
    explicit = "quantiles" in request.model_fields_set
    if request.sample_count < 2:
        if explicit and quantiles:
            raise InvalidRequest("quantiles: bands need sample_count >= 2 (quantiles over one path are that path)")
        quantiles = []
    if request.calibrate and not symmetric_pairs(quantiles):
        raise InvalidRequest(
            "calibrate: needs a symmetric pair of quantiles (e.g. [0.1, 0.9]) and sample_count >= 2 to calibrate"
        )
    windows = backtest_windows(len(candles), pred_len, request.windows, step, lookback)
    sampling = band_defaults.sampling(request)
    plan = _windows(request, candles, windows, pred_len, 0, settings, sampling)
    newest = windows[0].origin - windows[0].start  # the most rows a window has
    note = sliding_note(newest, pred_len, context, "a lookback of at most {fit}") if request.window == "exact" else None
    return Backtest(request, full, pred_len, step, lookback, quantiles, plan, sampling, [note] if note else [])


def backtest_result(backtest: Backtest, forecasts: list[Forecast]) -> dict[str, Any]:
    plan = backtest.plan
    report = backtest_report(
        plan.paths(forecasts, "data"),
        plan.actual,
        plan.contexts,
        [w.origin for w in plan.windows],
        backtest.quantiles,
        backtest.request.calibrate,
        # the point forecast /v1/predict/single answers with (the mean path, as the model computes it)
        np.stack([f.mean[:, CLOSE] for f in forecasts]),
    )
    stamps = backtest.full.series.timestamps if backtest.full.has_timestamps else None
    windows = [
        {
            "origin": w.origin,
            "timestamp": None if stamps is None else stamps[w.origin].isoformat(),
            "seed": f.seed,
            "mae": mae,
        }
        for w, f, mae in zip(plan.windows, forecasts, report["window_mae"])
    ]
    return {
        "pred_len": backtest.pred_len,
        "sample_count": backtest.request.sample_count,
        "step": backtest.step,
        "lookback": backtest.lookback,
        "sampling": backtest.sampling.as_dict(),
        "notes": backtest.notes,
        "windows": windows,
        "metrics": report["metrics"],
        "baselines": report["baselines"],
    }


# --- calibrated bands on /v1/predict/single -------------------------------------------------------


def calibration_plan(item: PreparedSeries, request: SingleRequest, settings: Settings) -> WindowForecasts:
    """The K past windows a calibrated single forecast runs beside itself (step = pred_len)."""
    assert request.calibration is not None
    k = request.calibration.windows
    pairs = symmetric_pairs(request.quantiles or [])
    if not pairs or request.sample_count < 2:
        raise InvalidRequest(
            "calibration: needs quantiles with a symmetric pair (e.g. [0.1, 0.5, 0.9]) and sample_count >= 2"
        )
    for lower, upper in pairs:
        least = windows_needed(upper - lower)
        if k < least:
            raise InvalidRequest(
                f"calibration.windows: {k} windows cannot calibrate the {lower:g}-{upper:g} band: a "
                f"{100 * (upper - lower):g}% band needs at least {least}",
                {"windows": k, "windows_needed": least},
            )
    _check_paths("calibration.windows", k + 1, request.sample_count, settings)
    candles = candles_array(request.data, (), "data")
    pred_len = item.series.pred_len
    needed = rows_needed(pred_len, k, pred_len)
    if len(candles) < needed:
        raise InvalidRequest(
            f"calibration.windows: {k} windows of pred_len {pred_len} need at least {needed} rows of data, "
            f"got {len(candles)}",
            {"rows": len(candles), "rows_needed": needed},
        )
    context = model_contexts(settings).get(item.model, settings.max_context)
    # the backtest's default lookback: no window slides
    windows = backtest_windows(len(candles), pred_len, k, pred_len, rows_that_fit(pred_len, context))
    # the past windows sample as the forecast they calibrate does
    return _windows(request, candles, windows, pred_len, 1, settings, item.sampling or band_defaults.sampling(request))


def calibration_result(
    plan: WindowForecasts, item: PreparedSeries, request: SingleRequest, forecast: Forecast, past: list[Forecast]
) -> dict[str, Any]:
    paths = plan.paths(past, "calibration")
    last = np.array([c[-1] for c in plan.contexts])
    bands = calibrate_forecast(
        paths,
        plan.actual,
        last,
        forecast.samples[:, :, CLOSE],
        float(item.series.candles[-1][CLOSE]),
        symmetric_pairs(request.quantiles or []),
    )
    stamps = [t.isoformat() if item.has_timestamps else None for t in forecast.timestamps]
    out = []
    for band in bands:
        low, high = band.pop("band")
        # 7 significant digits, like every forecast value in predict's answer (responses.float32_digits)
        low, high = float32_digits(np.asarray(low)), float32_digits(np.asarray(high))
        band["forecast"] = [
            {"step": h + 1, "timestamp": stamps[h], "lower": lo, "upper": hi}
            for h, (lo, hi) in enumerate(zip(low, high))
        ]
        out.append(band)
    return {"windows": len(plan.windows), "column": "close", "bands": out}
