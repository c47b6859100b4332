"""The job store: jobs and their items in SQL (SQLAlchemy Core; tables in ``tables.py``), what the
routes ask of it. What the worker asks (claims under a lease, answers, sweeps) is ``leases.py``.

Every method is synchronous and short (one transaction); the service calls them in a worker thread.
Writes run as ``WRITE`` transactions (SQLite: ``BEGIN IMMEDIATE``). A job and all its items are
inserted in one transaction, so a job exists whole or not at all.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, text, update

from .database import WRITE
from .tables import (
    CANCELLED,
    CANCELLING,
    FAILED,
    ITEM_TODO,
    OPEN,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    job_items,
    jobs,
)

# Rows per INSERT statement when a job is created.
_INSERT_CHUNK = 500


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_job_id() -> str:
    """``job_`` and 192 random bits: unguessable, so a job id is as good as a capability to read it."""
    return "job_" + secrets.token_urlsafe(24)


@dataclass
class NewItem:
    custom_id: str
    model: str | None
    request: str | None  # the JSON body; None when the item failed validation
    error: dict[str, Any] | None = None  # {"type", "message", "details"}: failed at submission


@dataclass
class NewJob:
    kind: str
    owner: str
    model: str | None
    input: str
    settings: dict[str, Any]
    items: list[NewItem] = field(default_factory=list)


class TooManyOpenJobs(Exception):
    def __init__(self, open_jobs: int) -> None:
        super().__init__(open_jobs)
        self.open_jobs = open_jobs


def _counts(rows: Sequence[Any]) -> dict[str, int]:
    counts = dict.fromkeys((QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED), 0)
    for status, n in rows:
        counts[status] = counts.get(status, 0) + int(n)
    return counts


def item_counts(connection: Connection, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Items by status of each job."""
    if not job_ids:
        return {}
    rows = connection.execute(
        select(job_items.c.job_id, job_items.c.status, func.count())
        .where(job_items.c.job_id.in_(list(job_ids)))
        .group_by(job_items.c.job_id, job_items.c.status)
    ).all()
    by_job: dict[str, list] = {job_id: [] for job_id in job_ids}
    for job_id, status, n in rows:
        by_job[job_id].append((status, n))
    return {job_id: _counts(found) for job_id, found in by_job.items()}


def job_record(row: Any, counts: dict[str, int]) -> dict[str, Any]:
    record = dict(row._mapping)
    record["settings"] = json.loads(record["settings"])
    final = record.pop("final_counts", None)
    record["counts"] = json.loads(final) if final and not any(counts.values()) else counts
    return record


def finish_job(connection: Connection, job_id: str, retention: timedelta, now: datetime) -> str | None:
    """End the job if none of its items is left to do: cancelled (when cancelling), failed (when every
    item failed), else succeeded. Run after the transaction that settled an item has committed, so
    the last of two items settled at once always sees the other. Returns the new status, if any."""
    todo = connection.execute(
        select(func.count()).where(job_items.c.job_id == job_id, job_items.c.status.in_(ITEM_TODO))
    ).scalar_one()
    if todo:
        return None
    job = connection.execute(select(jobs.c.status, jobs.c.total).where(jobs.c.id == job_id)).first()
    if job is None or job.status not in OPEN:
        return None
    counts = item_counts(connection, [job_id])[job_id]
    if job.status == CANCELLING:
        status = CANCELLED
    else:
        status = FAILED if job.total and counts[FAILED] == job.total else SUCCEEDED
    done = connection.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == job.status)
        .values(status=status, finished_at=now, expires_at=now + retention, final_counts=json.dumps(counts))
    )
    return status if done.rowcount else None


class JobStore:
    """The routes' side of the store."""

    def __init__(self, engine: Engine, retention: timedelta) -> None:
        self.engine = engine
        self.write = engine.execution_options(**WRITE)
        self.postgres = engine.dialect.name == "postgresql"
        self.retention = retention

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # --- creating -------------------------------------------------------------------------
    def create(self, job: NewJob, max_open: int) -> dict[str, Any]:
        """Insert the job and its items in one transaction; TooManyOpenJobs when its owner has ``max_open``."""
        now = utcnow()
        job_id = new_job_id()
        failed_now = [item for item in job.items if item.error is not None]
        with self.write.begin() as connection:
            if self.postgres:  # two requests of one owner at once must not both pass the limit
                connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:owner))"), {"owner": job.owner})
            open_jobs = connection.execute(
                select(func.count()).where(jobs.c.owner == job.owner, jobs.c.status.in_(OPEN))
            ).scalar_one()
            if open_jobs >= max_open:
                raise TooManyOpenJobs(open_jobs)
            connection.execute(
                insert(jobs).values(
                    id=job_id,
                    owner=job.owner,
                    kind=job.kind,
                    status=QUEUED,
                    model=job.model,
                    input=job.input,
                    settings=json.dumps(job.settings),
                    total=len(job.items),
                    created_at=now,
                )
            )
            rows = [
                {
                    "job_id": job_id,
                    "idx": i,
                    "custom_id": item.custom_id,
                    "model": item.model,
                    "status": FAILED if item.error is not None else QUEUED,
                    "request": item.request,
                    "error": json.dumps(item.error) if item.error is not None else None,
                    "finished_at": now if item.error is not None else None,
                    "attempts": 0,
                }
                for i, item in enumerate(job.items)
            ]
            for start in range(0, len(rows), _INSERT_CHUNK):
                connection.execute(insert(job_items), rows[start : start + _INSERT_CHUNK])
        if len(failed_now) == len(job.items):  # nothing to run: the job is over at once
            with self.write.begin() as connection:
                finish_job(connection, job_id, self.retention, now)
        found = self.get(job_id, job.owner)
        assert found is not None
        return found

    # --- reading --------------------------------------------------------------------------
    def get(self, job_id: str, owner: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.owner == owner)).first()
            if row is None:
                return None
            return job_record(row, item_counts(connection, [job_id])[job_id])

    def list(
        self, owner: str, status: str | None, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """The owner's jobs, newest first, after the job ``after`` (None when that job is not theirs)."""
        with self.engine.connect() as connection:
            query = select(jobs).where(jobs.c.owner == owner)
            if status is not None:
                query = query.where(jobs.c.status == status)
            if after is not None:
                cursor = connection.execute(
                    select(jobs.c.created_at).where(jobs.c.id == after, jobs.c.owner == owner)
                ).first()
                if cursor is None:
                    return None
                query = query.where(
                    or_(
                        jobs.c.created_at < cursor.created_at,
                        and_(jobs.c.created_at == cursor.created_at, jobs.c.id < after),
                    )
                )
            rows = connection.execute(query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            counts = item_counts(connection, [row.id for row in rows])
            return [job_record(row, counts[row.id]) for row in rows], more

    def answers(self, job_id: str, after_idx: int, limit: int, statuses: Sequence[str]) -> list[Any]:
        """One page of settled items in input order: idx, custom_id, status, response, error."""
        with self.engine.connect() as connection:
            return connection.execute(
                select(
                    job_items.c.idx, job_items.c.custom_id, job_items.c.status, job_items.c.response, job_items.c.error
                )
                .where(job_items.c.job_id == job_id, job_items.c.idx > after_idx, job_items.c.status.in_(statuses))
                .order_by(job_items.c.idx)
                .limit(limit)
            ).all()

    # --- changing -------------------------------------------------------------------------
    def cancel(self, job_id: str, owner: str) -> dict[str, Any] | None:
        """Cancel an open job: its queued items at once, its running ones as their instances notice
        (at their next lease renewal). What is done stays. None when the job is not the owner's."""
        now = utcnow()
        with self.write.begin() as connection:
            changed = connection.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.owner == owner, jobs.c.status.in_((QUEUED, RUNNING)))
                .values(status=CANCELLING)
            )
            if changed.rowcount:
                connection.execute(
                    update(job_items)
                    .where(job_items.c.job_id == job_id, job_items.c.status == QUEUED)
                    .values(status=CANCELLED, finished_at=now)
                )
        with self.write.begin() as connection:
            finish_job(connection, job_id, self.retention, now)
        return self.get(job_id, owner)

    def delete(self, job_id: str, owner: str) -> bool:
        """Delete the job and its results (running items are dropped by their instances)."""
        with self.write.begin() as connection:
            found = connection.execute(select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.owner == owner)).first()
            if found is None:
                return False
            connection.execute(delete(job_items).where(job_items.c.job_id == job_id))
            connection.execute(delete(jobs).where(jobs.c.id == job_id))
        return True

    # --- for the metrics ------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        """Jobs by status and the items still to do (of every owner)."""
        with self.engine.connect() as connection:
            by_status = dict(connection.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())
            backlog = connection.execute(
                select(func.count())
                .select_from(job_items.join(jobs, jobs.c.id == job_items.c.job_id))
                .where(jobs.c.status.in_((QUEUED, RUNNING)), job_items.c.status.in_(ITEM_TODO))
            ).scalar_one()
        return {"jobs": by_status, "backlog": int(backlog)}
