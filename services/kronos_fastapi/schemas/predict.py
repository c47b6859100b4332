"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these).

Two request shapes share the predict routes: the guide's ``{"data": [[o, h, l, c], …], "pred_len"}``
(and ``{"batch": [...]}``), and the original service's ``{"candles": [...], "timestamps",
"prediction_timestamps", "overrides"}`` (and ``{"items": [...]}``). Unknown fields are rejected
(422), so a misspelt option never silently falls back to its default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AllowInfNan, BaseModel, ConfigDict, Discriminator, Field, Strict, StrictBool, StrictInt, Tag
from pydantic.json_schema import SkipJsonSchema

# Candle values: JSON numbers only (no numeric strings, no "NaN"/"Infinity"), finite and bounded so
# the model's normalisation cannot overflow.
MAX_ABS_VALUE = 1e15
Number = Annotated[float, Strict(), AllowInfNan(False), Field(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
SEED_LIMIT = 2**63  # accepted; drawn seeds stay below 2^53 (exact in JavaScript), larger ones get a note

# Tags of the two row forms; they show up in pydantic's error paths and are dropped from ours.
ROW_TAGS = ("values", "named")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candle(_Strict):
    """One candle with named fields; volume and amount are optional."""

    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number | None = None
    amount: Number | None = None


ValuesRow = Annotated[list[Number], Field(min_length=4, max_length=6)]


def _row_form(value: Any) -> str:
    return "named" if isinstance(value, dict) else "values"


CandleRow = Annotated[
    Annotated[ValuesRow, Tag("values")] | Annotated[Candle, Tag("named")],
    Discriminator(_row_form),
]

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
    T: Number = Field(1.0, gt=0, description="sampling temperature (with quantiles and no T: 1.1)")
    top_k: StrictInt = Field(0, ge=0, description="keep the k most likely tokens (0 = off)")
    top_p: Number = Field(0.9, gt=0, le=1, description="nucleus sampling threshold (with quantiles and no top_p: 0.95)")
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
    calibration: CalibrationRequest | None = Field(
        None,
        description="/v1/predict/single only: also return the quantile bands calibrated on this request's own last "
        "`windows` windows (each one more forecast to run)",
    )
    model: str | None = Field(
        None, max_length=64, description="name of the model to use (GET /v1/models; default: KRONOS_DEFAULT_MODEL)"
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

    batch: list[SingleRequest] = Field(min_length=1)
    model: str | None = Field(None, max_length=64, description="the model of every item that names none")


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
    model_name: str | None = Field(None, description="in a batch: the model that forecast this item")


class ServedBy(BaseModel):
    device: str = Field(description="device the forecast ran on, e.g. cpu or cuda:0")
    model: str = Field(description="model version: hub id @ commit, or checkpoint folder @ weights digest")
    model_name: str | None = Field(None, description="the served model's name (GET /v1/models)")
    model_revision: str | None = Field(None, description="the hub commit of its weights (null for a local folder)")
    instance: str
    elapsed_ms: float


class SingleResponse(ServedBy, ForecastResult):
    pass


class BatchResponse(ServedBy):
    count: int
    results: list[ForecastResult]


class LegacyRow(CandleValues):
    timestamp: str


class LegacySingleResponse(BaseModel):
    series_id: str | None
    prediction: list[LegacyRow]
    model_version: str
    tokenizer_version: str


# --- backtest -------------------------------------------------------------------------------


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
        None, ge=2, description="rows of context per window (default KRONOS_MAX_CONTEXT, all the model sees)"
    )
    calibrate: bool = Field(False, description="also score bands calibrated on each window's earlier windows only")
    # predict's calibration is not a backtest field: hidden from the schema, refused with a pointer to `calibrate`
    calibration: SkipJsonSchema[CalibrationRequest | None] = None


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
    windows: list[BacktestWindow]
    metrics: ForecastMetrics
    baselines: Baselines


# --- health ---------------------------------------------------------------------------------


class HealthResponse(BaseModel):
    status: Literal["ok"]
    instance: str
    uptime_s: float


class ModelInfo(BaseModel):
    name: str
    version: str
    tokenizer_version: str
    path: str
    tokenizer_path: str
    max_context: int
    parameters: int
    load_seconds: float
    warmup_seconds: float
    source: str | None = Field(None, description="as configured: a folder, bundled or a hub id")
    revision: str | None = Field(None, description="hub commit of the predictor (null for a local folder)")
    tokenizer_source: str | None = None
    tokenizer_revision: str | None = None


class ServedModel(BaseModel):
    """One model of this instance, as GET /v1/models and /v1/readyz list it."""

    name: str
    default: bool
    state: Literal["ready", "loading", "failed"]
    reason: str | None = None
    source: str = Field(description="a folder, bundled or a hub id")
    revision: str | None = Field(description="resolved hub commit (null for a folder, or until loaded)")
    version: str | None = Field(description="hub id @ commit, or folder @ weights digest (null until loaded)")
    tokenizer_source: str | None = None
    tokenizer_revision: str | None = None
    parameters: int | None = None
    max_context: int
    device: str | None = None


class ModelsResponse(BaseModel):
    default: str
    models: list[ServedModel]


class BatchingInfo(BaseModel):
    max_batch_size: int = Field(description="most sample paths per model batch on this device (1 = no batching)")
    max_batch_tokens: int = Field(description="most tokens per model batch on this device")
    batch_wait_ms: float
    max_queue: int
    queue_depth: int = Field(description="series waiting for the model now")
    mode: Literal["step", "request"] = Field("step", description="KRONOS_BATCHING: step-level or request-level")
    kv_cache_bytes: int = Field(0, description="KV cache preallocated for step-level batching (0 until loaded)")


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed"]
    reason: str | None = None
    device: str | None = Field(description="device in use (null until resolved or when unavailable)")
    device_requested: str
    device_fallback: bool = Field(description="true when the requested device was absent and cpu is used instead")
    instance: str
    uptime_s: float
    model: ModelInfo | None = None
    batching: BatchingInfo
    models: list[ServedModel] | None = Field(None, description="every model of this instance and its state")


class DetailedHealthResponse(BaseModel):
    status: Literal["healthy", "degraded"]
    problems: list[str]
    instance: str
    uptime_s: float
    model: dict[str, Any]
    process: dict[str, Any]
    system: dict[str, Any]
    disk: dict[str, Any]


# --- errors ---------------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    type: str = Field(examples=["validation_error"])
    message: str = Field(examples=["data[3][1]: Input should be a finite number"])
    details: list[Any] = Field(default_factory=list, description="always a list (empty when there is nothing more)")


class ErrorResponse(BaseModel):
    error: ErrorInfo
