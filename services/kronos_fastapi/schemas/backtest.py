"""The backtest family (``/v1/backtest``): rolling-origin evaluation on the caller's own history, its
request (the single predict request's fields plus the windows) and its scores."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from pydantic.json_schema import SkipJsonSchema

from .common import Number, SamplingUsed, ServedBy
from .predict import CalibrationRequest, SingleRequest


class BacktestRequest(SingleRequest):
    """Rolling-origin evaluation on the caller's own history: the single request's fields plus the windows.

    Window j (0 = newest) has origin N - pred_len - j·step; it forecasts from rows
    [max(0, origin - lookback), origin) and is scored on rows [origin, origin + pred_len).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "data": [[100 + i, 101 + i, 99 + i, 100.5 + i] for i in range(40)],
                    "pred_len": 5,
                    "windows": 4,
                    "sample_count": 8,
                    "seed": 7,
                    "calibrate": True,
                }
            ]
        },
    )

    sample_count: StrictInt = Field(20, ge=1, description="sample paths per window (CRPS and bands come from them)")
    quantiles: list[Annotated[Number, Field(ge=0, le=1)]] | None = Field(
        [0.1, 0.5, 0.9],
        min_length=1,
        max_length=99,
        description="levels; each symmetric pair (e.g. 0.1 and 0.9) gets its coverage scored",
    )
    windows: StrictInt = Field(10, ge=1, description="forecast origins, newest first")
    step: StrictInt | None = Field(None, ge=1, description="rows between origins (default pred_len)")
    lookback: StrictInt | None = Field(
        None,
        ge=2,
        description="rows of context per window (default: max_context - pred_len of the model, the most that "
        "keep lookback + pred_len within its context, so no window slides)",
    )
    calibrate: bool = Field(False, description="also score bands calibrated on each window's earlier windows only")
    # predict's calibration is not a backtest field: hidden from the schema, refused with a pointer to `calibrate`
    calibration: SkipJsonSchema[CalibrationRequest | None] = None
    # nor is return_paths: a window's paths come from /v1/predict/single with its rows and seed
    return_paths: SkipJsonSchema[StrictBool] = False


class BacktestWindow(BaseModel):
    origin: int = Field(description="row index of the window's first forecast candle")
    timestamp: str | None = Field(description="the origin row's timestamp (null without timestamps)")
    seed: int = Field(description="POST the window's rows to /v1/predict/single with this seed to get its forecast")
    mae: float = Field(description="mean absolute error of the window's close forecast")


class Coverage(BaseModel):
    lower: float
    upper: float
    nominal: float = Field(description="the share of outcomes the band claims to hold: upper - lower")
    observed: float | None = Field(description="the share it held")
    observed_calibrated: float | None = Field(None, description="the share the calibrated band held (calibrate)")
    calibrated_windows: int | None = Field(None, description="windows with enough earlier windows to calibrate")


class ReliabilityBin(BaseModel):
    lower: float
    upper: float
    count: int
    forecast: float | None = Field(description="mean P(up) of the forecasts in this bin")
    observed: float | None = Field(description="how often the close did end up above the last close")


class HorizonMetrics(BaseModel):
    step: int
    mae: float
    rmse: float
    mape: float | None
    direction_accuracy: float | None
    crps: float
    coverage: list[Coverage]
    brier: float


class ForecastMetrics(BaseModel):
    mae: float
    rmse: float
    mape: float | None = Field(description="mean absolute error in % of the true close")
    direction_accuracy: float | None = Field(
        description="share of windows whose last step moved the right way from the last close (both moved)"
    )
    crps: float = Field(description="continuous ranked probability score of the sample paths, in price units")
    coverage: list[Coverage]
    brier: float = Field(description="Brier score of P(close > last close); 0.25 is a coin flip")
    reliability: list[ReliabilityBin]
    per_horizon: list[HorizonMetrics]


class Skill(BaseModel):
    mae: float | None = Field(description="1 - model MAE / baseline MAE: above 0 the model is better")
    crps: float | None = Field(description="1 - model CRPS / baseline CRPS")


class BaselineMetrics(ForecastMetrics):
    skill: Skill


class Baselines(BaseModel):
    last_value: BaselineMetrics
    drift: BaselineMetrics


class BacktestResponse(ServedBy):
    pred_len: int
    sample_count: int
    step: int
    lookback: int
    sampling: SamplingUsed = Field(
        description="every window's settings (as a single request with as many paths: T 1.1 / top_p 0.95 "
        "unless given); with a window's rows and seed they reproduce its forecast through /v1/predict/single"
    )
    notes: list[str] = Field(
        default_factory=list, description="what to know, e.g. that a lookback past the model's context slides"
    )
    windows: list[BacktestWindow]
    metrics: ForecastMetrics
    baselines: Baselines
