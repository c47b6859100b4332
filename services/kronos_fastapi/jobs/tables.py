"""The job store's tables as the queries see them (the schema at the newest revision; the migrations in
``migrations/versions/`` build it step by step and never import this module).

- ``jobs``: one row per job: who owns it (a hash of the API key, '' when keys are off), its kind,
  status, model, the input's settings (JSON) and its times.
- ``job_items``: one row per item (series): its request body (JSON, exactly what /v1/predict/single or
  /v1/backtest would be sent), status, the lease of the instance computing it, and its answer: the
  response body (JSON text, as the route answered it) or the error object.

Times are UTC, written by the service (timezone-aware); SQLite hands them back naive, so ``UTC``
reads them as UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text, TypeDecorator

metadata = MetaData()

# Job statuses: OPEN ones are still to be worked on (they count against KRONOS_JOBS_MAX_OPEN_PER_KEY).
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED, EXPIRED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelling",
    "cancelled",
    "expired",
)
OPEN = (QUEUED, RUNNING, CANCELLING)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
# Item statuses: queued and running are to do, the others are final.
ITEM_TODO = (QUEUED, RUNNING)
ITEM_DONE = (SUCCEEDED, FAILED)


class UTC(TypeDecorator):
    """A timezone-aware UTC datetime on every database (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("model", String(128)),
    Column("input", String(16), nullable=False),
    Column("settings", Text, nullable=False),
    Column("total", Integer, nullable=False),
    Column("created_at", UTC, nullable=False),
    Column("started_at", UTC),
    Column("finished_at", UTC),
    Column("expires_at", UTC),
    Column("final_counts", Text),  # revision 0002: the counts, kept once the items are deleted at expiry
    Index("ix_jobs_owner_created", "owner", "created_at"),
    Index("ix_jobs_status", "status"),
)

job_items = Table(
    "job_items",
    metadata,
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("custom_id", String(256), nullable=False),
    Column("model", String(128)),
    Column("status", String(16), nullable=False),
    Column("request", Text),
    Column("response", Text),
    Column("error", Text),
    Column("lease_token", String(64)),
    Column("lease_expires_at", UTC),
    Column("started_at", UTC),
    Column("finished_at", UTC),
    # revision 0002
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(128)),
    Index("ix_job_items_status", "job_id", "status"),
    Index("ix_job_items_custom_id", "job_id", "custom_id", unique=True),
)
