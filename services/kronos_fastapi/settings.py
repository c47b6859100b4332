"""The service's one ``Settings`` object: every ``KRONOS_*`` variable, typed and checked at start-up.

Priority: environment variables > the ``.env`` file > the defaults below. ``load_settings`` turns a
bad value into a ``SettingsError`` whose message names the variable (``KRONOS_MAX_CONTEXT: …``).
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.checkpoints.bundled import bundled_model_path, bundled_tokenizer_path
from model.checkpoints.hub import BUNDLED, default_tokenizer, is_hub_id
from model.devices import parse_device
from model.errors import DeviceError, KronosError

ENV_PREFIX = "KRONOS_"

# KRONOS_MAX_BATCH_SIZE=0: rows per model batch by device. On 2 CPU cores throughput stops growing
# well before 32 rows (the steps turn compute-bound), so bigger batches only add latency; a GPU
# keeps gaining far beyond, and an out-of-memory batch is split and retried anyway.
AUTO_BATCH_ROWS_CPU = 32
AUTO_BATCH_ROWS_GPU = 256
# KRONOS_MAX_BATCH_TOKENS=0: on a CPU a long forecast's decoding is compute-bound, so a batch of
# many long forecasts takes as long as running them one by one but answers them all at the end;
# about 4k tokens keeps 32 short forecasts (100 rows + 20) in one batch and long ones (400 + 120)
# in batches of 7. On a GPU the budget bounds the KV cache (Kronos-small: about 4 GB at 128k).
AUTO_BATCH_TOKENS_CPU = 4096
AUTO_BATCH_TOKENS_GPU = 131072
# KRONOS_PREFILL_CHUNK=0 (step-level batching): prefill tokens per decode step. On a CPU a 128-token
# chunk of Kronos-small costs a few decode steps, so a 400-row prefill delays the others' next token
# by that much at a time instead of all at once; a GPU runs a whole window in about one step.
AUTO_PREFILL_CHUNK_CPU = 128
AUTO_PREFILL_CHUNK_GPU = 512

# A comma-separated list in the environment ("a,b , c"); JSON lists are accepted too.
CommaList = Annotated[list[str], NoDecode]


class SettingsError(ValueError):
    """A setting with a value the service cannot start with; the message names the variable."""


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc}") from None
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [str(part).strip() for part in value if str(part).strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the service. Field ``x`` is read from ``KRONOS_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- model and device -------------------------------------------------------------------
    device: str = Field("cpu", description="cpu, cuda, cuda:N, mps or auto (the best this machine has)")
    device_fallback: Literal["refuse", "cpu"] = Field(
        "refuse",
        description="when DEVICE is absent: 'refuse' (stay not-ready, readyz 503) or 'cpu' (serve on CPU, warn)",
    )
    precision: Literal["fp32", "bf16", "int8"] = Field(
        "fp32",
        description="arithmetic of the models that name none (KRONOS_MODELS name=source#precision): fp32 (exact), or "
        "opt-in bf16 / int8 (faster where the CPU has AVX512-BF16 or AMX; not the reference's numbers)",
    )
    model_path: Path = Field(default_factory=bundled_model_path, description="predictor checkpoint folder")
    tokenizer_path: Path | None = Field(None, description="tokenizer checkpoint folder (default: MODEL_PATH/tokenizer)")
    max_context: int = Field(512, ge=2, le=8192, description="tokens the model sees; older rows are dropped")
    model_revision: str | None = Field(None, description="commit, branch or tag of a hub MODEL_PATH (default main)")
    tokenizer_revision: str | None = Field(None, description="commit, branch or tag of a hub TOKENIZER_PATH")
    models: CommaList = Field(
        default_factory=list,
        description="several models: name=source[@revision][#precision] pairs, comma-separated; source is a folder, "
        "a hub id or 'bundled' (set: MODEL_PATH and TOKENIZER_PATH are not used)",
    )
    default_model: str | None = Field(None, description="the model of requests that name none (default: the first)")
    model_load_timeout_s: float = Field(
        900.0, ge=0, description="a model load (download included) still running after this exits the process (0 = off)"
    )
    model_stall_s: float = Field(
        60.0,
        ge=0,
        description="readyz 503 while one model call (a decode step, or a request-level batch) runs longer (0 = off)",
    )
    model_failure_limit: int = Field(
        3, ge=0, description="readyz 503 after this many model calls in a row fail with a non-input error (0 = off)"
    )

    # --- request limits ---------------------------------------------------------------------
    default_pred_len: int = Field(120, ge=1, description="pred_len when a request gives none")
    max_pred_len: int = Field(0, ge=0, description="largest pred_len accepted (0 = MAX_CONTEXT; at most MAX_CONTEXT)")
    max_rows: int = Field(2048, ge=1, description="most candle rows in one series")
    max_batch_items: int = Field(64, ge=1, description="most series in one /v1/predict/batch request")
    max_sample_count: int = Field(32, ge=1, description="most sample paths per series")
    max_backtest_paths: int = Field(
        320, ge=1, description="most sample paths in one /v1/backtest (windows × sample_count) or calibrated predict"
    )
    max_path_values: int = Field(
        200_000,
        ge=1,
        description="most numbers of sample paths one predict request returns (return_paths): sample_count × "
        "pred_len × columns, summed over a batch's items",
    )
    default_freq: str = Field("D", description="pandas frequency of rows sent without timestamps")
    rate_limit_per_minute: int = Field(100, ge=0, description="requests per minute per client (0 = off)")
    max_request_size_mb: float = Field(10.0, gt=0, description="largest request body, in MiB")
    request_timeout_s: float = Field(120.0, gt=0, description="longest a forecast may take before a 504")
    shutdown_timeout_s: float = Field(
        130.0,
        ge=0,
        description="how long SIGTERM lets admitted requests finish (keep it above REQUEST_TIMEOUT_S); the ones "
        "still running then get a JSON 503",
    )

    # --- batching and backpressure ----------------------------------------------------------
    max_batch_size: int = Field(
        0,
        ge=0,
        description="most sample paths (sum of sample_count) in one model batch; 0 = auto (32 on cpu, 256 on a GPU); "
        "1 = no batching",
    )
    max_batch_tokens: int = Field(
        0,
        ge=0,
        description="most tokens in one model batch, each sample path counting its context (at most MAX_CONTEXT "
        "rows) plus pred_len; 0 = auto (4096 on cpu, 131072 on a GPU)",
    )
    batch_wait_ms: float = Field(10.0, ge=0, description="longest the first series of a batch waits for company")
    max_queue: int = Field(128, ge=1, description="most series waiting for the model; beyond it 503 + Retry-After")
    batching: Literal["step", "request"] = Field(
        "step",
        description="step: series join and leave the running batch at every decode step; request: a batch is "
        "formed once and runs to its end (the older scheduler, kept for comparison)",
    )
    prefill_chunk: int = Field(
        0,
        ge=0,
        description="step batching: most prefill tokens run per decode step beside other series (a longer context "
        "is prefilled over several steps; a series alone runs up to a whole window per step); 0 = auto (128 on "
        "cpu, 512 on a GPU)",
    )

    # --- access -----------------------------------------------------------------------------
    api_keys: CommaList = Field(default_factory=list, description="accepted API keys, comma-separated (empty = open)")
    require_api_keys: bool = Field(False, description="refuse to start while API_KEYS is empty (fail closed)")
    allowed_clients: CommaList = Field(
        default_factory=list, description="client IPs, CIDRs or host names allowed in (empty = everyone)"
    )
    trusted_proxies: CommaList = Field(
        default_factory=list, description="IPs, CIDRs or host names whose X-Forwarded-For is believed"
    )
    address_refresh_s: float = Field(30.0, gt=0, description="how often host names in the two lists are re-resolved")
    cors_origins: CommaList = Field(default_factory=list, description="origins allowed by CORS (empty = CORS off)")

    # --- serving ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="address kronos-serve binds (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="port kronos-serve binds")
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = Field("INFO", description="log level")
    enable_docs: bool = Field(True, description="serve /docs, /redoc and /openapi.json")
    enable_ui: bool = Field(True, description="serve the forecast page at / (its API calls need a key like any client)")
    instance_name: str = Field(
        default_factory=socket.gethostname,
        description="this instance's name (X-Kronos-Instance header; default: host name)",
    )

    # --- jobs (/v1/jobs: bulk forecasts and backtests, services/kronos_fastapi/jobs) ----------
    jobs_enabled: bool = Field(True, description="serve /v1/jobs and run its worker")
    jobs_dir: Path = Field(Path("kronos-jobs"), description="folder of the SQLite job store (jobs.sqlite3)")
    jobs_database_url: str | None = Field(
        None, description="a database shared by replicas, postgresql://user:password@host/db (unset: SQLite, JOBS_DIR)"
    )
    jobs_max_share: float = Field(
        0.5, gt=0, le=1, description="most of the batch budgets (rows, tokens) job items hold at once"
    )
    jobs_max_in_flight: int = Field(
        0, ge=0, description="job items this instance runs at once; 0 = auto (MAX_BATCH_SIZE × JOBS_MAX_SHARE)"
    )
    jobs_lease_s: float = Field(
        30.0, ge=1, description="an item's lease: another instance takes it over this long after its holder stops"
    )
    jobs_retention_hours: float = Field(
        168.0, gt=0, description="results kept this long after a job ends; then it is expired and deleted"
    )
    jobs_max_upload_mb: float = Field(100.0, gt=0, description="largest POST /v1/jobs body (an uploaded file), in MiB")
    jobs_max_items: int = Field(10000, ge=1, description="most items (series) in one job")
    jobs_max_open_per_key: int = Field(
        10, ge=1, description="most jobs queued or running per API key (per instance group when keys are off)"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        try:
            return parse_device(value)
        except DeviceError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("device_fallback", "precision", mode="before")
    @classmethod
    def _fallback(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("api_keys", "allowed_clients", "trusted_proxies", "cors_origins", "models", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("allowed_clients", "trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(f"{entry!r} is not a valid CIDR: {exc}") from None
            elif not entry.replace(".", "").replace("-", "").replace(":", "").replace("_", "").isalnum():
                raise ValueError(f"{entry!r} is neither an IP address, a CIDR nor a host name")
        return value

    @field_validator("default_freq")
    @classmethod
    def _freq(cls, value: str) -> str:
        import pandas as pd

        try:
            pd.tseries.frequencies.to_offset(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{value!r} is not a pandas frequency: {exc}") from None
        return value

    @field_validator("instance_name")
    @classmethod
    def _instance(cls, value: str) -> str:
        value = value.strip()
        if not value or not value.isprintable() or len(value) > 128:
            raise ValueError("must be 1 to 128 printable characters")
        return value

    @field_validator("jobs_database_url")
    @classmethod
    def _jobs_url(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        schemes = ("postgresql://", "postgres://", "postgresql+psycopg://", "sqlite:///")
        if value is not None and not value.startswith(schemes):
            raise ValueError("must start with postgresql:// (or postgres://, postgresql+psycopg://) or sqlite:///")
        return value

    @field_validator("model_path", "tokenizer_path")
    @classmethod
    def _folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and str(value) == BUNDLED:
            return bundled_model_path() if info.field_name == "model_path" else bundled_tokenizer_path()
        if value is not None and is_hub_id(str(value)):  # fetched when the model loads
            return value
        if value is not None and not value.expanduser().is_dir():
            raise ValueError(f"checkpoint folder {value} does not exist (nor is it a hub id of the form org/name)")
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.require_api_keys and not self.api_keys:
            raise ValueError(
                "KRONOS_REQUIRE_API_KEYS is true but KRONOS_API_KEYS is empty: refusing to serve an open API "
                "(is the API-key Secret missing or empty?)"
            )
        if self.tokenizer_path is None and not self.models:
            try:
                default_tokenizer(str(self.model_path))
            except KronosError as exc:
                raise ValueError(f"KRONOS_TOKENIZER_PATH: not set, and {exc}") from None
        if self.models or self.default_model:
            from .model_specs import model_specs  # the rules of KRONOS_MODELS live there

            model_specs(self)
        if self.max_pred_len == 0:
            self.max_pred_len = self.max_context
        if self.max_pred_len > self.max_context:
            raise ValueError(
                f"KRONOS_MAX_PRED_LEN ({self.max_pred_len}) must not exceed KRONOS_MAX_CONTEXT ({self.max_context})"
            )
        if self.default_pred_len > self.max_pred_len:
            raise ValueError(
                f"KRONOS_DEFAULT_PRED_LEN ({self.default_pred_len}) must not exceed "
                f"KRONOS_MAX_PRED_LEN ({self.max_pred_len})"
            )
        if self.max_queue < self.max_batch_items:
            raise ValueError(
                f"KRONOS_MAX_QUEUE ({self.max_queue}) must be at least KRONOS_MAX_BATCH_ITEMS "
                f"({self.max_batch_items}), or a full batch request could never be queued"
            )
        return self

    # --- derived ----------------------------------------------------------------------------
    @property
    def resolved_tokenizer_path(self) -> Path:
        return self.tokenizer_path if self.tokenizer_path is not None else self.model_path / "tokenizer"

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_size_mb * 1024 * 1024)

    @property
    def jobs_max_upload_bytes(self) -> int:
        return int(self.jobs_max_upload_mb * 1024 * 1024)

    def batch_rows(self, device: str) -> int:
        """Most sample paths per model batch on ``device``: MAX_BATCH_SIZE, or the auto default."""
        if self.max_batch_size:
            return self.max_batch_size
        return AUTO_BATCH_ROWS_CPU if device == "cpu" else AUTO_BATCH_ROWS_GPU

    def batch_tokens(self, device: str) -> int:
        """Most tokens per model batch on ``device``: MAX_BATCH_TOKENS, or the auto default."""
        if self.max_batch_tokens:
            return self.max_batch_tokens
        return AUTO_BATCH_TOKENS_CPU if device == "cpu" else AUTO_BATCH_TOKENS_GPU

    def prefill_tokens(self, device: str) -> int:
        """Prefill tokens per decode step on ``device``: PREFILL_CHUNK, or the auto default."""
        if self.prefill_chunk:
            return self.prefill_chunk
        return AUTO_PREFILL_CHUNK_CPU if device == "cpu" else AUTO_PREFILL_CHUNK_GPU


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Settings from the environment, ``env_file`` and ``overrides`` (highest); SettingsError names the variable."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            name = env_name(loc[0]) if loc else "settings"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if loc else message)
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
