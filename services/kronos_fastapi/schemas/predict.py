"""The predict family (``/v1/predict/single``, ``/v1/predict/batch``): request and response bodies.

Two request shapes share the predict routes: the guide's ``{"data": [[o, h, l, c], …], "pred_len"}``
(and ``{"batch": [...]}``), and the original service's ``{"candles": [...], "timestamps",
"prediction_timestamps", "overrides"}`` (and ``{"items": [...]}``). Unknown fields are rejected
(422), so a misspelt option never silently falls back to its default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from .common import SEED_LIMIT, Candle, CandleRow, ErrorInfo, Number, SamplingUsed, ServedBy, _Strict

_SINGLE_EXAMPLE = {"data": [[100.0, 105.0, 98.0, 102.0], [102.0, 108.0, 101.0, 107.0]], "pred_len": 10}
_SINGLE_FULL_EXAMPLE = {
    "data": [
        {"open": 100.0, "high": 105.0, "low": 98.0, "close": 102.0, "volume": 1200.0},
        {"open": 102.0, "high": 108.0, "low": 101.0, "close": 107.0, "volume": 900.0},
        {"open": 107.0, "high": 109.0, "low": 104.0, "close": 105.0, "volume": 1500.0},
    ],
    "timestamps": ["2024-03-01T09:30:00Z", "2024-03-01T09:35:00Z", "2024-03-01T09:40:00Z"],
    "pred_len": 5,
    "T": 1.0,
    "top_p": 0.9,
    "sample_count": 8,
    "seed": 7,
    "quantiles": [0.1, 0.5, 0.9],
}


class CalibrationRequest(_Strict):
    """Calibrate the bands on the request's own history (see /v1/backtest's `calibrate`)."""

    windows: StrictInt = Field(ge=1, description="past windows of pred_len rows to calibrate on (newest first)")


class SingleRequest(_Strict):
    """One series to forecast (the deployment guide's shape)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_SINGLE_EXAMPLE, _SINGLE_FULL_EXAMPLE]})

    data: list[CandleRow] = Field(
        min_length=1,
        description="candles, oldest first: [open, high, low, close(, volume(, amount))] or objects with those "
        "names; every row the same form",
    )
    pred_len: StrictInt | None = Field(None, ge=1, description="candles to forecast (default KRONOS_DEFAULT_PRED_LEN)")
    timestamps: list[datetime] | None = Field(
        None,
        description="ISO 8601, one per row, strictly increasing; the forecast continues their calendar (trading "
        "weekdays, session hours and step, inferred). Without them rows are consecutive periods of `freq` "
        "(default KRONOS_DEFAULT_FREQ) from 2024-01-01T00:00",
    )
    freq: str | None = Field(
        None,
        description="pandas frequency continued from the last timestamp (e.g. 5min, h, D, B), replacing the "
        "inferred calendar; with `calendar`, the bar length within a session",
    )
    calendar: str | None = Field(
        None,
        max_length=32,
        description="exchange calendar code (exchange_calendars: XNYS, XNAS, XLON, XTKS, ...) for exact sessions "
        "and holidays; needs timestamps",
    )
    repair_input: StrictBool = Field(
        False,
        description="repair input candles that break low <= min(open, close) <= max(open, close) <= high "
        "(widen high and low) instead of a 422 naming the row",
    )
    T: Number = Field(
        1.0, gt=0, description="sampling temperature; not given: 1.0 with one sample path, 1.1 with several"
    )
    top_k: StrictInt = Field(0, ge=0, description="keep the k most likely tokens (0 = off; then top_p is not applied)")
    # the bound sits in the type: a Field(le=1) here would lose to Number's own le (1e15)
    top_p: Annotated[Number, Field(le=1)] = Field(
        0.9, gt=0, description="nucleus threshold; not given: 0.9 with one sample path, 0.95 with several"
    )
    sample_count: StrictInt = Field(1, ge=1, description="sample paths; the forecast is their mean")
    seed: StrictInt | None = Field(
        None,
        ge=0,
        lt=SEED_LIMIT,
        description="makes the answer reproducible; drawn seeds are below 2^53 so JavaScript keeps them exact",
    )
    quantiles: list[Annotated[Number, Field(ge=0, le=1)]] | None = Field(
        None,
        min_length=1,
        max_length=99,
        description="quantile levels over the sample paths, e.g. [0.1, 0.5, 0.9]; needs sample_count >= 2. "
        "Answered as per-column quantiles and as quantiles of close (the band)",
    )
    window: Literal["exact", "rolling"] = Field(
        "exact",
        description="exact: the reference's arithmetic (once the rows plus pred_len outgrow the model's context, "
        "every step recomputes the window); rolling: keep the cache and drop the oldest key/value per step "
        "(sliding-window attention): several times faster for such forecasts, not equal to the reference",
    )
    return_paths: StrictBool = Field(
        False,
        description="also return every sample path (`paths`: sample_count lists of pred_len candles, repaired and "
        "with the columns of `forecast`, whose mean they are); at most KRONOS_MAX_PATH_VALUES numbers "
        "(sample_count × pred_len × columns, summed over a batch's items), else a 422",
    )
    calibration: CalibrationRequest | None = Field(
        None,
        description="/v1/predict/single only: also return the quantile bands calibrated on this request's own last "
        "`windows` windows (each one more forecast to run)",
    )
    model: str | None = Field(
        None, max_length=64, description="name of the model to use (GET /v1/models; default: KRONOS_DEFAULT_MODEL)"
    )


class BatchItem(SingleRequest):
    """One item of a batch: a single request, with an optional ``id`` echoed in its result."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None, max_length=256, description="your name for the item (e.g. a symbol), echoed in its result"
    )


class BatchRequest(_Strict):
    """Several series, answered in order and forecast as one model batch."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "batch": [
                        {"data": [[100, 105, 98, 102]], "pred_len": 10},
                        {"data": [[200, 205, 198, 202]], "pred_len": 10},
                    ]
                }
            ]
        },
    )

    batch: list[BatchItem] = Field(min_length=1)
    model: str | None = Field(None, max_length=64, description="the model of every item that names none")
    partial: StrictBool = Field(
        False,
        description="keep what finished: every item is answered by its forecast or by its own error object "
        "(invalid, failed, or not finished by KRONOS_REQUEST_TIMEOUT_S), in a 200. Default false: all or nothing, "
        "one error for the batch (a 422 lists every invalid item)",
    )


# --- the original service's shape -----------------------------------------------------------


class Overrides(_Strict):
    """Generation settings of the original API; every field optional."""

    pred_len: StrictInt | None = Field(None, ge=1, description="default: len(prediction_timestamps)")
    temperature: Number | None = Field(None, gt=0)
    top_k: StrictInt | None = Field(None, ge=0)
    top_p: Number | None = Field(None, gt=0, le=1)
    sample_count: StrictInt | None = Field(None, ge=1)
    seed: StrictInt | None = Field(None, ge=0, lt=SEED_LIMIT, description="an addition: makes the answer reproducible")
    repair_input: StrictBool | None = Field(None, description="an addition: repair invalid input candles, not a 422")
    return_paths: StrictBool | None = Field(
        None, description="an addition: also return every sample path (`paths`), as `return_paths` of the data shape"
    )


class LegacySingleRequest(_Strict):
    """The original service's single request."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "series_id": "BTCUSDT-5m",
                    "candles": [
                        {"open": 100.0, "high": 105.0, "low": 98.0, "close": 102.0, "volume": 10.0},
                        {"open": 102.0, "high": 108.0, "low": 101.0, "close": 107.0, "volume": 12.0},
                    ],
                    "timestamps": ["2024-03-01T09:30:00Z", "2024-03-01T09:35:00Z"],
                    "prediction_timestamps": ["2024-03-01T09:40:00Z", "2024-03-01T09:45:00Z"],
                    "overrides": {"sample_count": 4},
                }
            ]
        },
    )

    series_id: str | None = Field(None, max_length=256)
    candles: list[Candle] = Field(min_length=1)
    timestamps: list[datetime]
    prediction_timestamps: list[datetime] = Field(min_length=1)
    overrides: Overrides | None = None
    model: str | None = Field(
        None, max_length=64, description="name of the model to use (GET /v1/models; default: KRONOS_DEFAULT_MODEL)"
    )


class LegacyBatchItem(LegacySingleRequest):
    series_id: str = Field(max_length=256)


class LegacyBatchRequest(_Strict):
    """The original service's batch request."""

    items: list[LegacyBatchItem] = Field(min_length=1)
    model: str | None = Field(None, max_length=64, description="the model of every item that names none")


# --- responses ------------------------------------------------------------------------------


class CandleValues(BaseModel):
    """A valid candle (low <= min(open, close) <= max(open, close) <= high), to float32's 7 digits."""

    open: float
    high: float
    low: float
    close: float
    volume: float | None = Field(description="null when the request had no volume")
    amount: float | None = Field(description="null when the request had no amount")


class ForecastRow(CandleValues):
    step: int = Field(description="1 = the first period after the input")
    timestamp: str | None = Field(description="ISO 8601; null when the request had no timestamps")


class QuantileBand(BaseModel):
    level: float
    forecast: list[ForecastRow] = Field(description="per-column quantiles: each column on its own, not one path")


class CloseBand(BaseModel):
    level: float
    close: list[float] = Field(description="the level's quantile of close at each step")


class CalibratedRow(BaseModel):
    step: int
    timestamp: str | None
    lower: float
    upper: float


class CalibratedBand(BaseModel):
    lower: float = Field(description="the band's lower quantile level, e.g. 0.1")
    upper: float = Field(description="its upper level, e.g. 0.9")
    nominal: float = Field(description="the coverage it claims: upper - lower")
    observed: float | None = Field(description="how often the raw band held the truth in the calibration windows")
    forecast: list[CalibratedRow] = Field(description="the calibrated band of the close, per step")


class CalibratedBands(BaseModel):
    windows: int = Field(description="past windows calibrated on; each was one more forecast, run in the same batch")
    column: Literal["close"] = "close"
    bands: list[CalibratedBand]


class ForecastResult(BaseModel):
    pred_len: int
    sample_count: int
    seed: int = Field(description="the seed used; send it back to get the same answer")
    forecast: list[ForecastRow] = Field(description="the mean over the (repaired) sample paths")
    quantiles: list[QuantileBand] | None = None
    close_quantiles: list[CloseBand] | None = Field(None, description="quantiles of close: the headline band")
    repaired_candles: int = Field(
        0, description="sample-path candles whose high/low were widened to cover open and close"
    )
    notes: list[str] = Field(default_factory=list, description="what the service changed or warns about")
    p_up: list[float] | None = Field(
        None, description="per step, the share of sample paths closing above the last input close (sample_count > 1)"
    )
    calibration: CalibratedBands | None = Field(None, description="bands calibrated on past windows, when asked for")
    paths: list[list[CandleValues]] | None = Field(
        None,
        description="with return_paths only (absent otherwise): every sample path, sample_count lists of pred_len "
        "candles in `forecast`'s steps, repaired and rounded as it is; `forecast` is their mean",
    )
    model_name: str | None = Field(None, description="in a batch: the model that forecast this item")
    sampling: SamplingUsed = Field(description="the settings and seed this forecast sampled with")


class SingleResponse(ServedBy, ForecastResult):
    pass


class BatchResult(ForecastResult):
    index: int = Field(description="the item's place in the request's batch")
    id: str | None = Field(None, description="the item's id, as sent (null when it had none)")


class ItemError(BaseModel):
    """A batch item answered by an error (with ``partial``): invalid, failed, or past the deadline."""

    index: int
    id: str | None = None
    status: int = Field(description="the status it would have had alone: 422 invalid, 504 past the deadline, …")
    error: ErrorInfo


class BatchResponse(ServedBy):
    count: int
    results: list[BatchResult | ItemError] = Field(description="in item order; error objects with partial only")
    succeeded: int | None = Field(None, description="with partial: items answered with a forecast")
    failed: int | None = Field(None, description="with partial: items answered with an error object")


class LegacyRow(CandleValues):
    timestamp: str


class LegacySingleResponse(BaseModel):
    series_id: str | None
    prediction: list[LegacyRow]
    model_version: str
    tokenizer_version: str
    paths: list[list[CandleValues]] | None = Field(
        None,
        description="with overrides.return_paths only (absent otherwise): every sample path, in prediction's steps",
    )
