"""Prometheus metrics of one app instance, in its own registry (so tests can build many apps).

Names follow Prometheus conventions: ``kronos_`` prefix, ``_total`` counters, base units
(``_seconds``), no colons.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["PROMETHEUS_CONTENT_TYPE", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ROWS_BUCKETS = (1, 2, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_PRED_LEN_BUCKETS = (1, 5, 10, 20, 30, 60, 120, 240, 512, 1024)
_ITEMS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = tuple(2**k for k in range(6, 19))  # 64 … 262144
_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServiceMetrics:
    """Every metric the service exports; ``render()`` gives the text exposition."""

    def __init__(self) -> None:
        # The *_created series double the output and no dashboard uses them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "kronos_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "kronos_http_request_duration_seconds",
            "HTTP request latency, by route template and status",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("kronos_http_requests_in_flight", "HTTP requests being served now", registry=r)
        self.prediction_duration = Histogram(
            "kronos_prediction_duration_seconds",
            "Time of one request's forecast: queue wait and model time, from admission to answer",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.predicted_series = Counter(
            "kronos_predicted_series", "Series forecast successfully", ["model", "endpoint"], registry=r
        )
        self.rows = Histogram(
            "kronos_request_rows", "Candle rows per series in a request", buckets=_ROWS_BUCKETS, registry=r
        )
        self.pred_len = Histogram(
            "kronos_request_pred_len", "Forecast length (pred_len) per series", buckets=_PRED_LEN_BUCKETS, registry=r
        )
        self.batch_items = Histogram(
            "kronos_request_batch_items", "Series per /v1/predict/batch request", buckets=_ITEMS_BUCKETS, registry=r
        )
        # The batching scheduler.
        self.queue_depth = Gauge(
            "kronos_queue_depth", "Series waiting for the model (not yet in a batch)", ["model"], registry=r
        )
        self.queue_capacity = Gauge(
            "kronos_queue_capacity", "Most series that may wait for the model (KRONOS_MAX_QUEUE)", ["model"], registry=r
        )
        self.queue_wait = Histogram(
            "kronos_queue_wait_seconds",
            "Time a series waited in the queue before its batch started",
            ["model"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "kronos_batch_size", "Series per model batch", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "kronos_batch_rows", "Sample paths (rows) per model batch", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "kronos_batch_tokens",
            "Tokens per model batch (each sample path: its context plus pred_len)",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "kronos_batch_duration_seconds",
            "Model time of one batch (including its retries after an out-of-memory split)",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batches = Counter(
            "kronos_batches",
            "Model batches started, by why they left the queue: full (KRONOS_MAX_BATCH_SIZE or "
            "KRONOS_MAX_BATCH_TOKENS reached) or waited (KRONOS_BATCH_WAIT_MS passed); step-level batching "
            "also counts series that joined a running batch together (joined)",
            ["model", "reason"],
            registry=r,
        )
        self.batch_splits = Counter(
            "kronos_batch_splits",
            "Out-of-memory retries: request-level batches split in two, or step-level batches whose newest "
            "series was evicted and queued again",
            ["model"],
            registry=r,
        )
        self.decode_steps = Counter(
            "kronos_decode_steps",
            "Decode steps run by step-level batching (KRONOS_BATCHING=step)",
            ["model"],
            registry=r,
        )
        self.step_rows = Histogram(
            "kronos_step_rows",
            "Sample paths (rows) in the running batch at each decode step (step-level batching)",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.kv_cache_bytes = Gauge(
            "kronos_kv_cache_bytes",
            "Bytes of the KV cache preallocated for step-level batching (0 when batching per request)",
            ["model"],
            registry=r,
        )
        self.cancelled_series = Counter(
            "kronos_cancelled_series",
            "Series dropped from the queue or from a running batch because their request ended, by why "
            "(disconnect, timeout, failed: another item of the same batch request failed)",
            ["model", "reason"],
            registry=r,
        )
        self.rate_limited = Counter("kronos_rate_limited", "Requests refused by the rate limit", ["route"], registry=r)
        self.rejections = Counter(
            "kronos_rejections",
            "Requests refused before or instead of a forecast, by reason (error type; queue_full = backpressure)",
            ["reason"],
            registry=r,
        )
        self.model_ready = Gauge(
            "kronos_model_ready", "1 when the model is loaded and warmed up", ["model"], registry=r
        )
        self.model_load_seconds = Gauge(
            "kronos_model_load_seconds", "Time to load and warm up the model", ["model"], registry=r
        )
        self.device = Info(
            "kronos_device", "Device requested and used, model version and instance", ["model"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def for_model(self, name: str) -> ModelMetrics:
        """These metrics as one served model sees them: its ``model`` label already set."""
        return ModelMetrics(self, name)


class ModelMetrics:
    """A view of ``ServiceMetrics`` for one model: a metric with a ``model`` label comes with that label
    bound (``view.batches.labels("full")`` is ``batches.labels(name, "full")``); the others pass through.
    The batcher and the service take it in place of ``ServiceMetrics``, so they need not know about models."""

    def __init__(self, metrics: ServiceMetrics, name: str) -> None:
        self._metrics = metrics
        self.model_name = name

    def __getattr__(self, attribute: str) -> Any:
        metric = getattr(self._metrics, attribute)
        if "model" in getattr(metric, "_labelnames", ()):
            return _BoundModel(metric, self.model_name)
        return metric


class _BoundModel:
    """A labelled metric with its ``model`` label bound: ``labels(...)`` takes the remaining ones."""

    def __init__(self, metric: Any, name: str) -> None:
        self._metric = metric
        self._name = name

    def labels(self, *values: str, **named: str) -> Any:
        if named:
            return self._metric.labels(model=self._name, **named)
        return self._metric.labels(self._name, *values)

    def __getattr__(self, attribute: str) -> Any:  # observe, inc, set, info … of the model's child
        return getattr(self._metric.labels(self._name), attribute)
