"""The models and health family (``/v1/models``, ``/v1/readyz``, ``/v1/healthz``, ``/v1/healthz/detailed``): the
served models, their readiness and batching, and the instance's health."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


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
    precision: str = Field("fp32", description="fp32 (exact, the reference's arithmetic), bf16 or int8")
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
    state: Literal["ready", "loading", "failed", "broken", "stalled"]
    reason: str | None = None
    source: str = Field(description="a folder, bundled or a hub id")
    revision: str | None = Field(description="resolved hub commit (null for a folder, or until loaded)")
    version: str | None = Field(description="hub id @ commit, or folder @ weights digest (null until loaded)")
    tokenizer_source: str | None = None
    tokenizer_revision: str | None = None
    parameters: int | None = None
    max_context: int
    precision: str = Field("fp32", description="fp32 (exact, the reference's arithmetic), bf16 or int8")
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
    status: Literal["ready", "loading", "failed", "broken", "stalled", "draining"]
    reason: str | None = None
    device: str | None = Field(description="device in use (null until resolved or when unavailable)")
    device_requested: str
    device_fallback: bool = Field(description="true when the requested device was absent and cpu is used instead")
    instance: str
    uptime_s: float
    model: ModelInfo | None = None
    batching: BatchingInfo
    models: list[ServedModel] | None = Field(None, description="every model of this instance and its state")
    jobs: dict[str, Any] | None = Field(
        None, description="the job store: enabled, database, url (no password), reachable, reason, schema_revision"
    )


class DetailedHealthResponse(BaseModel):
    status: Literal["healthy", "degraded"]
    problems: list[str]
    instance: str
    uptime_s: float
    model: dict[str, Any]
    process: dict[str, Any]
    system: dict[str, Any]
    disk: dict[str, Any]
