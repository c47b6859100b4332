"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these).

Two request shapes share the predict routes: the guide's ``{"data": [[o, h, l, c], …], "pred_len"}``
(and ``{"batch": [...]}``), and the original service's ``{"candles": [...], "timestamps",
"prediction_timestamps", "overrides"}`` (and ``{"items": [...]}``). Unknown fields are rejected
(422), so a misspelt option never silently falls back to its default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AllowInfNan, BaseModel, ConfigDict, Discriminator, Field, Strict, StrictInt, Tag

# Candle values: JSON numbers only (no numeric strings, no "NaN"/"Infinity"), finite and bounded so
# the model's normalisation cannot overflow.
MAX_ABS_VALUE = 1e15
Number = Annotated[float, Strict(), AllowInfNan(False), Field(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
SEED_LIMIT = 2**63

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
        description="ISO 8601, one per row, strictly increasing; the forecast continues their frequency. Without "
        "them rows are consecutive periods of `freq` (default KRONOS_DEFAULT_FREQ) from 2024-01-01T00:00",
    )
    freq: str | None = Field(None, description="pandas frequency of the rows (e.g. 5min, h, D, B); default: inferred")
    T: Number = Field(1.0, gt=0, description="sampling temperature")
    top_k: StrictInt = Field(0, ge=0, description="keep the k most likely tokens (0 = off)")
    top_p: Number = Field(0.9, gt=0, le=1, description="nucleus sampling threshold")
    sample_count: StrictInt = Field(1, ge=1, description="sample paths; the forecast is their mean")
    seed: StrictInt | None = Field(None, ge=0, lt=SEED_LIMIT, description="makes the answer reproducible")
    quantiles: list[Annotated[Number, Field(ge=0, le=1)]] | None = Field(
        None, min_length=1, max_length=99, description="quantile levels over the sample paths, e.g. [0.1, 0.5, 0.9]"
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


# --- the original service's shape -----------------------------------------------------------


class Overrides(_Strict):
    """Generation settings of the original API; every field optional."""

    pred_len: StrictInt | None = Field(None, ge=1, description="default: len(prediction_timestamps)")
    temperature: Number | None = Field(None, gt=0)
    top_k: StrictInt | None = Field(None, ge=0)
    top_p: Number | None = Field(None, gt=0, le=1)
    sample_count: StrictInt | None = Field(None, ge=1)
    seed: StrictInt | None = Field(None, ge=0, lt=SEED_LIMIT, description="an addition: makes the answer reproducible")


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


class LegacyBatchItem(LegacySingleRequest):
    series_id: str = Field(max_length=256)


class LegacyBatchRequest(_Strict):
    """The original service's batch request."""

    items: list[LegacyBatchItem] = Field(min_length=1)


# --- responses ------------------------------------------------------------------------------


class CandleValues(BaseModel):
    open: float
    high: float
    low: float
    close: float
    volume: float
    amount: float


class ForecastRow(CandleValues):
    step: int = Field(description="1 = the first period after the input")
    timestamp: str | None = Field(description="ISO 8601; null when the request had no timestamps")


class QuantileBand(BaseModel):
    level: float
    forecast: list[ForecastRow]


class ForecastResult(BaseModel):
    pred_len: int
    sample_count: int
    seed: int = Field(description="the seed used; send it back to get the same answer")
    forecast: list[ForecastRow] = Field(description="the mean over the sample paths")
    quantiles: list[QuantileBand] | None = None


class ServedBy(BaseModel):
    device: str = Field(description="device the forecast ran on, e.g. cpu or cuda:0")
    model: str = Field(description="model version: checkpoint folder @ weights digest")
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
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
