"""From the model's ``Forecast`` back to response bodies, in the guide's shape or the original service's.

Values are rounded to 7 significant digits, what float32 (the model's precision) holds, so
``105.0`` is not sent as ``104.99999237060547``; rounding keeps the order of values, so repaired
candles stay valid. Columns the request did not give (volume, amount) are null, not invented.
With ``return_paths`` every sample path is sent the same way (``paths``): the mean is their mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model import Forecast
from model.decoding.forecast import FEATURE_COLUMNS as COLUMNS
from model.evaluation import up_probability
from model.series.candles import RULE

from .errors import InvalidRequest, ServiceError, field_details
from .series_input import PreparedSeries

CLOSE = COLUMNS.index("close")


def _finite(values: np.ndarray, item: PreparedSeries, index: int, batch: bool) -> None:
    if not np.isfinite(values).all():
        where = f"batch[{index}]: " if batch else ""
        raise InvalidRequest(
            f"{where}the forecast is not finite: the candle values are too large or too degenerate for the model"
        )


def _stamps(item: PreparedSeries, forecast: Forecast) -> list[str | None]:
    if not item.has_timestamps:
        return [None] * len(forecast.timestamps)
    return [t.isoformat() for t in forecast.timestamps]


SIGNIFICANT_DIGITS = 7


def float32_digits(values: np.ndarray) -> list:
    """Nested lists of floats rounded to 7 significant digits (float32's precision).

    Vectorised: scaled by an exact power of ten, rounded, scaled back (a correctly rounded product or
    quotient of an integer and a power of ten is the double nearest the decimal, which prints short).
    The rare values outside 10^±15 go through Python's formatting instead."""
    x = np.array(values, dtype=np.float64)
    flat = x.reshape(-1)
    finite = np.isfinite(flat) & (flat != 0)
    decimals = np.zeros(flat.shape)
    decimals[finite] = SIGNIFICANT_DIGITS - 1 - np.floor(np.log10(np.abs(flat[finite])))
    scale = 10.0 ** np.abs(decimals)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = np.where(decimals >= 0, np.round(flat * scale) / scale, np.round(flat / scale) * scale)
    fast = finite & (np.abs(decimals) <= 22)
    flat[fast] = rounded[fast]
    for i in np.flatnonzero(np.isfinite(flat) & ~fast):
        flat[i] = float(f"{flat[i]:.{SIGNIFICANT_DIGITS}g}")
    return x.tolist()


def _candles(values: np.ndarray, columns: int) -> list[dict[str, Any]]:
    """Rows of named values; the columns the request lacked are null."""
    rounded = float32_digits(values[:, :columns]) if len(values) else []
    missing = dict.fromkeys(COLUMNS[columns:])
    return [{**dict(zip(COLUMNS, row)), **missing} for row in rounded]


def sample_paths(forecast: Forecast, columns: int) -> list[list[dict[str, Any]]]:
    """Every sample path's candles as the mean's: the service asks for clean forecasts, so they are the
    repaired paths ``forecast.mean`` averages; rounded, and the columns the request lacked null."""
    rounded = float32_digits(forecast.samples[:, :, :columns])
    missing = dict.fromkeys(COLUMNS[columns:])
    return [[{**dict(zip(COLUMNS, row)), **missing} for row in path] for path in rounded]


def _rows(values: np.ndarray, stamps: list[str | None], columns: int) -> list[dict[str, Any]]:
    return [
        {"step": i + 1, "timestamp": stamp, **candle}
        for i, (stamp, candle) in enumerate(zip(stamps, _candles(values, columns)))
    ]


def _repair_note(forecast: Forecast) -> list[str]:
    if not forecast.repaired:
        return []
    total = forecast.samples.shape[0] * forecast.samples.shape[1]
    return [
        f"{forecast.repaired} of {total} sample-path candles repaired: high and low widened to cover open and "
        f"close, so every candle has {RULE}"
    ]


def forecast_result(item: PreparedSeries, forecast: Forecast, index: int = 0, batch: bool = False) -> dict[str, Any]:
    _finite(forecast.mean, item, index, batch)
    stamps = _stamps(item, forecast)
    bands = close_bands = None
    if item.quantiles:
        levels = forecast.quantiles(item.quantiles)
        _finite(levels, item, index, batch)
        bands = [
            {"level": q, "forecast": _rows(values, stamps, item.columns)} for q, values in zip(item.quantiles, levels)
        ]
        closes = float32_digits(forecast.close_quantiles(item.quantiles))
        close_bands = [{"level": q, "close": values} for q, values in zip(item.quantiles, closes)]
    body = {
        "pred_len": item.series.pred_len,
        "sample_count": item.series.sample_count,
        "seed": forecast.seed,
        "forecast": _rows(forecast.mean, stamps, item.columns),
        "quantiles": bands,
        "close_quantiles": close_bands,
        "repaired_candles": forecast.repaired,
        "notes": item.notes + _repair_note(forecast),
        "p_up": _p_up(item, forecast),
        "sampling": sampling_used(item, forecast),
    }
    if item.return_paths:
        body["paths"] = sample_paths(forecast, item.columns)
    return body


def sampling_used(item: PreparedSeries, forecast: Forecast) -> dict[str, Any]:
    """The settings the forecast sampled with and the seed it used: send them back for the same forecast."""
    s = item.series
    used = {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "sample_count": s.sample_count}
    return {**used, "seed": forecast.seed}


def _p_up(item: PreparedSeries, forecast: Forecast) -> list[float] | None:
    """P(close_h > last input close) per step, from the sample paths (none from a single path)."""
    if item.series.sample_count < 2:
        return None
    closes = forecast.samples[None, :, :, CLOSE]
    return up_probability(closes, np.array([float(item.series.candles[-1][CLOSE])]))[0].tolist()


def legacy_result(
    item: PreparedSeries,
    forecast: Forecast,
    model_version: str,
    tokenizer_version: str,
    index: int = 0,
    batch: bool = False,
) -> dict[str, Any]:
    _finite(forecast.mean, item, index, batch)
    prediction = [
        {"timestamp": t.isoformat(), **candle}
        for t, candle in zip(forecast.timestamps, _candles(forecast.mean, item.columns))
    ]
    body = {
        "series_id": item.series_id,
        "prediction": prediction,
        "model_version": model_version,
        "tokenizer_version": tokenizer_version,
    }
    if item.return_paths:
        body["paths"] = sample_paths(forecast, item.columns)
    return body


# --- a batch that keeps what finished (``"partial": true``) ---------------------------------------


def item_error(index: int, item_id: str | None, error: ServiceError) -> dict[str, Any]:
    """A batch item answered by its own error: the status it would have had alone and the error shape."""
    details = field_details(error.message, error.details) if isinstance(error, InvalidRequest) else error.details
    listed = [] if details is None else details if isinstance(details, list) else [details]
    return {
        "index": index,
        "id": item_id,
        "status": error.status_code,
        "error": {"type": error.error_type, "message": error.message, "details": listed},
    }


def partial_results(parsed: Any, outcomes: list, services: list) -> dict[str, Any]:
    """Every item of a partial batch in order: its forecast, or its error object (invalid items,
    series that failed, series not finished by the deadline)."""
    total = len(parsed.positions) + len(parsed.invalid)
    results: list[Any] = [None] * total
    for index, (error, item_id) in parsed.invalid.items():
        results[index] = item_error(index, item_id, error)
    for index, item, outcome, service in zip(parsed.positions, parsed.items, outcomes, services):
        if isinstance(outcome, ServiceError):
            results[index] = item_error(index, item.series_id, outcome)
            continue
        try:
            body = forecast_result(item, outcome, index, True)
        except InvalidRequest as error:  # a forecast that is not finite
            results[index] = item_error(index, item.series_id, error)
            continue
        results[index] = {**body, "model_name": service.name, "index": index, "id": item.series_id}
    failed = sum("error" in r for r in results)
    return {"count": total, "succeeded": total - failed, "failed": failed, "results": results}
