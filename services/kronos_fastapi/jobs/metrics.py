"""The job metrics, in the service's registry (``ServiceMetrics.registry``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_ITEM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelling", "cancelled", "expired")


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Gauge(
            "kronos_jobs",
            "Jobs in the job store by status (every owner; refreshed every few seconds)",
            ["status"],
            registry=registry,
        )
        for status in JOB_STATUSES:
            self.jobs.labels(status).set(0)
        self.backlog = Gauge(
            "kronos_jobs_backlog_items", "Job items still to do (queued or running) in the job store", registry=registry
        )
        self.items = Counter(
            "kronos_job_items",
            "Job items this instance settled, by model and outcome (succeeded, failed, cancelled)",
            ["model", "outcome"],
            registry=registry,
        )
        self.item_duration = Histogram(
            "kronos_job_item_duration_seconds",
            "Time from claiming a job item to writing its answer, on this instance",
            ["model"],
            buckets=_ITEM_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge("kronos_job_items_in_flight", "Job items this instance computes now", registry=registry)
        self.store_up = Gauge("kronos_jobs_store_up", "1 while the job store answers, else 0", registry=registry)
