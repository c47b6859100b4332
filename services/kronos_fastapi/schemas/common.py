"""What every API family's bodies share: the candle field types (JSON numbers only, finite and
bounded; a row as values or as named fields), the strict base that rejects unknown fields (422, so a
misspelt option never silently falls back to its default), who served an answer, and the error body.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AllowInfNan, BaseModel, ConfigDict, Discriminator, Field, Strict, Tag

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


class SamplingUsed(BaseModel):
    """The settings a forecast sampled with (the request's, else the defaults: T 1.0 / top_p 0.9 with one
    sample path, T 1.1 / top_p 0.95 with several) and its seed: send them back, with the same rows and
    pred_len, for the same forecast."""

    temperature: float = Field(description="T")
    top_k: int
    top_p: float
    sample_count: int
    seed: int | None = Field(description="the seed used (a backtest: the request's; each window's is in windows)")


class ServedBy(BaseModel):
    device: str = Field(description="device the forecast ran on, e.g. cpu or cuda:0")
    model: str = Field(description="model version: hub id @ commit, or checkpoint folder @ weights digest")
    model_name: str | None = Field(None, description="the served model's name (GET /v1/models)")
    model_revision: str | None = Field(None, description="the hub commit of its weights (null for a local folder)")
    precision: str = Field("fp32", description="the model's arithmetic: fp32 (exact), bf16 or int8")
    instance: str
    elapsed_ms: float


# --- errors ---------------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    type: str = Field(examples=["validation_error"])
    message: str = Field(examples=["data[3][1]: Input should be a finite number"])
    details: list[Any] = Field(default_factory=list, description="always a list (empty when there is nothing more)")


class ErrorResponse(BaseModel):
    error: ErrorInfo
