"""The jobs family (``/v1/jobs``): bulk forecasts and backtests, run in the background and kept.

A job's request is a JSON body (``JobRequest``) or a multipart upload (a ``file`` plus form fields,
documented on the route); its items are each the body of a /v1/predict/single or /v1/backtest request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .common import _Strict

JobKind = Literal["forecast", "backtest"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled", "expired"]


class JobRequest(_Strict):
    """A job as JSON: each item is a /v1/predict/single (kind forecast) or /v1/backtest (kind backtest) body
    with a `custom_id` added (or `{"custom_id", "body": {...}}`)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "forecast",
                    "items": [
                        {"custom_id": "AAPL", "data": [[100, 105, 98, 102], [102, 108, 101, 107]], "pred_len": 5},
                        {"custom_id": "MSFT", "body": {"data": [[200, 205, 198, 202]], "pred_len": 5, "seed": 7}},
                    ],
                }
            ]
        },
    )

    kind: JobKind = Field(
        "forecast", description="forecast: items are /v1/predict/single bodies; backtest: ones of /v1/backtest"
    )
    items: list[dict[str, Any]] = Field(min_length=1, description="at most KRONOS_JOBS_MAX_ITEMS; custom_ids unique")
    model: str | None = Field(None, max_length=64, description="the model of every item that names none")


class JobCounts(BaseModel):
    total: int = Field(description="items in the job")
    completed: int = Field(description="items answered (their response is in the results)")
    failed: int = Field(description="items that failed (their error is in the results)")
    cancelled: int = Field(0, description="items cancelled before they were answered")
    running: int = Field(0, description="items being computed now")
    queued: int = Field(0, description="items waiting")


class Job(BaseModel):
    id: str = Field(description="job_ and 192 random bits")
    object: Literal["job"] = "job"
    kind: JobKind
    status: JobStatus = Field(
        description="queued, running, then succeeded (every item settled, at least one answered), failed (every "
        "item failed), or cancelling then cancelled; expired once its results are deleted"
    )
    model: str | None = Field(description="the job's model (null: each item's own, or the default)")
    input: Literal["json", "jsonl", "csv", "parquet"]
    counts: JobCounts
    created_at: datetime
    started_at: datetime | None = Field(description="when its first item was claimed")
    finished_at: datetime | None
    expires_at: datetime | None = Field(description="finished_at + KRONOS_JOBS_RETENTION_HOURS: results deleted then")
    settings: dict[str, Any] = Field(
        description="a table upload's shared settings (the seed drawn when none was given, id_column, rows)"
    )
    results_url: str


class JobList(BaseModel):
    jobs: list[Job] = Field(description="newest first")
    has_more: bool
    next_after: str | None = Field(description="pass as `after` for the next page")
