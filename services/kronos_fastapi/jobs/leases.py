"""The worker's side of the store: items claimed under a lease, answers written exactly once, and the
sweeps that keep jobs moving when an instance dies.

- **Claims.** An instance claims a few runnable items at a time (queued, or running under a lease
  that expired: its holder died or stalled), oldest job first, and only items of models it has
  ready. On Postgres the candidates are locked ``FOR UPDATE SKIP LOCKED``, so replicas claiming at
  once never wait for nor take each other's items; on SQLite the write lock serialises claims.
  Each claim gets a fresh lease token; the holder renews its leases (``renew``) while it computes.
- **Answers.** An item's answer and its final status are written in one statement, ``UPDATE ... WHERE
  status = 'running' AND lease_token = <the claim's>``: an instance whose lease was taken over
  writes nothing, so an item computed twice around a crash is answered once, and a committed answer
  is never computed again (only queued and running items are ever claimed).
- **Poison items.** An item claimed ``MAX_ATTEMPTS`` times whose lease expired each time (its instance
  died while computing it) fails with a message instead of taking down the next instance. A graceful
  stop gives its items back (``release``) without counting the attempt.
- **Sweeps** (every instance, every few seconds): items of cancelling jobs whose holder is gone are
  cancelled; jobs with nothing left to do are finished; finished jobs past ``expires_at`` lose their
  items and become ``expired``; expired jobs are deleted one retention period later.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update

from .store import JobStore, finish_job, utcnow
from .tables import CANCELLED, CANCELLING, EXPIRED, FAILED, FINISHED, ITEM_TODO, QUEUED, RUNNING, SUCCEEDED, jobs
from .tables import job_items as items

MAX_ATTEMPTS = 5
CRASHED = {
    "type": "item_crashed",
    "message": f"the item was started {MAX_ATTEMPTS} times and each time its instance stopped before finishing "
    "it (killed, or out of memory?); it is not tried again",
    "details": [],
}


@dataclass
class Claim:
    """One item this instance holds under a lease."""

    job_id: str
    idx: int
    custom_id: str
    kind: str
    model: str | None
    request: str
    token: str
    attempts: int


def _held(claim: Claim) -> tuple:
    """The item of ``claim``, while the claim still holds its lease (nobody took it over since)."""
    return (
        items.c.job_id == claim.job_id,
        items.c.idx == claim.idx,
        items.c.status == RUNNING,
        items.c.lease_token == claim.token,
    )


class Leases(JobStore):
    """The store as the worker uses it; ``owner`` is this instance's name (kept with its leases)."""

    def claim(self, owner: str, limit: int, models: Collection[str], lease: timedelta) -> list[Claim]:
        """Claim up to ``limit`` runnable items of ``models``, oldest job first."""
        if limit <= 0 or not models:
            return []
        now = utcnow()
        claimable = or_(items.c.status == QUEUED, and_(items.c.status == RUNNING, items.c.lease_expires_at < now))
        query = (
            select(items.c.job_id, items.c.idx, items.c.attempts)
            .select_from(items.join(jobs, jobs.c.id == items.c.job_id))
            .where(jobs.c.status.in_((QUEUED, RUNNING)), items.c.model.in_(list(models)), claimable)
            .order_by(jobs.c.created_at, items.c.job_id, items.c.idx)
            .limit(limit)
        )
        if self.postgres:
            query = query.with_for_update(skip_locked=True, of=items)
        claims: list[Claim] = []
        crashed: set[str] = set()
        with self.write.begin() as connection:
            for job_id, idx, attempts in connection.execute(query).all():
                where = (items.c.job_id == job_id, items.c.idx == idx)
                if attempts >= MAX_ATTEMPTS:
                    connection.execute(
                        update(items)
                        .where(*where)
                        .values(status=FAILED, error=json.dumps(CRASHED), finished_at=now, lease_token=None)
                    )
                    crashed.add(job_id)
                    continue
                token = secrets.token_hex(16)
                connection.execute(
                    update(items)
                    .where(*where)
                    .values(
                        status=RUNNING,
                        lease_token=token,
                        lease_owner=owner,
                        lease_expires_at=now + lease,
                        started_at=func.coalesce(items.c.started_at, now),
                        attempts=items.c.attempts + 1,
                    )
                )
                claims.append(Claim(job_id, idx, "", "", None, "", token, attempts + 1))
            if claims:
                self._fill(connection, claims)
                job_ids = sorted({c.job_id for c in claims})
                connection.execute(
                    update(jobs).where(jobs.c.id.in_(job_ids), jobs.c.status == QUEUED).values(status=RUNNING)
                )
                connection.execute(
                    update(jobs).where(jobs.c.id.in_(job_ids), jobs.c.started_at.is_(None)).values(started_at=now)
                )
        for job_id in crashed:
            self.finish(job_id)
        return claims

    @staticmethod
    def _fill(connection, claims: list[Claim]) -> None:
        for claim in claims:
            row = connection.execute(
                select(items.c.custom_id, items.c.model, items.c.request, jobs.c.kind)
                .select_from(items.join(jobs, jobs.c.id == items.c.job_id))
                .where(items.c.job_id == claim.job_id, items.c.idx == claim.idx)
            ).one()
            claim.custom_id, claim.model, claim.request, claim.kind = row.custom_id, row.model, row.request, row.kind

    def renew(self, tokens: Sequence[str], lease: timedelta) -> set[str]:
        """Extend these leases; returns the tokens still held whose jobs still run (not cancelling,
        cancelled or deleted): the worker drops the others' items."""
        if not tokens:
            return set()
        now = utcnow()
        running_jobs = select(jobs.c.id).where(jobs.c.status.in_((QUEUED, RUNNING)))
        with self.write.begin() as connection:
            # Not the leases of a cancelled job's items: should their holder not stop them, the sweep
            # cancels them once the lease has run out.
            connection.execute(
                update(items)
                .where(
                    items.c.lease_token.in_(list(tokens)), items.c.status == RUNNING, items.c.job_id.in_(running_jobs)
                )
                .values(lease_expires_at=now + lease)
            )
            held = connection.execute(
                select(items.c.lease_token)
                .select_from(items.join(jobs, jobs.c.id == items.c.job_id))
                .where(
                    items.c.lease_token.in_(list(tokens)),
                    items.c.status == RUNNING,
                    jobs.c.status.in_((QUEUED, RUNNING)),
                )
            ).all()
        return {row.lease_token for row in held}

    def settle(self, claim: Claim, status: str, response: str | None = None, error: dict | None = None) -> bool:
        """Write the item's answer (succeeded with ``response``, failed with ``error``, or cancelled) if
        this claim still holds its lease; True when written. The job is finished afterwards if this
        was its last item."""
        now = utcnow()
        values: dict[str, Any] = {"status": status, "finished_at": now, "lease_token": None, "lease_expires_at": None}
        if status == SUCCEEDED:
            values["response"] = response
        elif status == FAILED:
            values["error"] = json.dumps(error)
        with self.write.begin() as connection:
            written = connection.execute(update(items).where(*_held(claim)).values(**values)).rowcount
        if written:
            self.finish(claim.job_id)
        return bool(written)

    def release(self, claims: Sequence[Claim]) -> None:
        """Give items back unanswered (a graceful stop, the model not ready): queued again at once, the
        attempt not counted."""
        if not claims:
            return
        with self.write.begin() as connection:
            for claim in claims:
                connection.execute(
                    update(items)
                    .where(*_held(claim))
                    .values(
                        status=QUEUED,
                        lease_token=None,
                        lease_owner=None,
                        lease_expires_at=None,
                        attempts=case((items.c.attempts > 0, items.c.attempts - 1), else_=0),
                    )
                )

    def finish(self, job_id: str) -> str | None:
        with self.write.begin() as connection:
            return finish_job(connection, job_id, self.retention, utcnow())

    # --- sweeps ---------------------------------------------------------------------------
    def sweep(self, now: datetime | None = None, batch: int = 100) -> dict[str, int]:
        """One round of housekeeping (see the module docstring); returns how much each part did."""
        now = now or utcnow()
        done = {"cancelled_items": 0, "finished": 0, "expired": 0, "deleted": 0}
        with self.write.begin() as connection:
            cancelling = select(jobs.c.id).where(jobs.c.status == CANCELLING)
            done["cancelled_items"] = connection.execute(
                update(items)
                .where(
                    items.c.job_id.in_(cancelling),
                    or_(items.c.status == QUEUED, and_(items.c.status == RUNNING, items.c.lease_expires_at < now)),
                )
                .values(status=CANCELLED, finished_at=now, lease_token=None)
            ).rowcount
        # Open jobs with nothing left to do: normally finished by the instance that settled their last
        # item, unless it died between that commit and the next.
        with self.engine.connect() as connection:
            todo = select(items.c.job_id).where(items.c.status.in_(ITEM_TODO))
            idle = connection.execute(
                select(jobs.c.id).where(jobs.c.status.in_((QUEUED, RUNNING, CANCELLING)), jobs.c.id.not_in(todo))
            ).all()
        for (job_id,) in idle:
            done["finished"] += self.finish(job_id) is not None
        with self.write.begin() as connection:
            old = connection.execute(
                select(jobs.c.id).where(jobs.c.status.in_(FINISHED), jobs.c.expires_at < now).limit(batch)
            ).all()
            ids = [row.id for row in old]
            if ids:
                connection.execute(delete(items).where(items.c.job_id.in_(ids)))
                connection.execute(update(jobs).where(jobs.c.id.in_(ids)).values(status=EXPIRED))
            done["expired"] = len(ids)
            done["deleted"] = connection.execute(
                delete(jobs).where(jobs.c.status == EXPIRED, jobs.c.expires_at < now - self.retention)
            ).rowcount
        return done
