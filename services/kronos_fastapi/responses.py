"""From the model's ``Forecast`` back to response bodies, in the guide's shape or the original service's."""

from __future__ import annotations

from typing import Any

import numpy as np

from model import Forecast
from model.evaluation import up_probability
from model.pipeline import FEATURE_COLUMNS as COLUMNS

from .errors import InvalidRequest
from .forecasting import PreparedSeries

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


def _rows(values: np.ndarray, stamps: list[str | None]) -> list[dict[str, Any]]:
    return [
        {"step": i + 1, "timestamp": stamp, **dict(zip(COLUMNS, row))}
        for i, (stamp, row) in enumerate(zip(stamps, values.tolist()))
    ]


def forecast_result(item: PreparedSeries, forecast: Forecast, index: int = 0, batch: bool = False) -> dict[str, Any]:
    _finite(forecast.mean, item, index, batch)
    stamps = _stamps(item, forecast)
    bands = None
    if item.quantiles:
        levels = forecast.quantiles(item.quantiles)
        _finite(levels, item, index, batch)
        bands = [{"level": q, "forecast": _rows(values, stamps)} for q, values in zip(item.quantiles, levels)]
    return {
        "pred_len": item.series.pred_len,
        "sample_count": item.series.sample_count,
        "seed": forecast.seed,
        "forecast": _rows(forecast.mean, stamps),
        "quantiles": bands,
        "p_up": _p_up(item, forecast),
    }


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
        {"timestamp": t.isoformat(), **dict(zip(COLUMNS, row))}
        for t, row in zip(forecast.timestamps, forecast.mean.tolist())
    ]
    return {
        "series_id": item.series_id,
        "prediction": prediction,
        "model_version": model_version,
        "tokenizer_version": tokenizer_version,
    }
