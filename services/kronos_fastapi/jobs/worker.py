"""The job worker: one background task per service instance that claims items from the store in
small groups, answers each through its route (``dispatch.py``: the same model scheduler as
/v1/predict, as background work behind interactive requests) and writes each answer as it comes.

- **How much at once**: at most ``KRONOS_JOBS_MAX_IN_FLIGHT`` items (0 = the default model's batch
  rows × ``KRONOS_JOBS_MAX_SHARE``, at least 1), claimed ``CLAIM_GROUP`` at a time, only for models this
  instance has ready (a restarted instance claims nothing while its model loads).
- **Leases**: renewed every third of ``KRONOS_JOBS_LEASE_S``; an item whose lease is gone (taken over
  after a stall, its job cancelled or deleted) is dropped at once: its series leave the queue or
  their batch, as a client hang-up's do, and nothing is written for it.
- **Outcomes**: a 200 is written as the item's response; an error the item would get again (its
  input, its size) as its error; a passing one (the model not ready, the instance stopping) gives
  the item back to be claimed again.
- **Stopping** (SIGTERM): no more claims while the instance drains; at shutdown the items still in
  flight are given back unanswered, so another instance (or this one restarted) takes them at once
  instead of after their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..catalog import ModelCatalog
from ..settings import Settings
from .dispatch import answer
from .leases import Claim, Leases
from .metrics import JOB_STATUSES, JobMetrics
from .tables import CANCELLED, FAILED, SUCCEEDED

logger = logging.getLogger("kronos.jobs")

CLAIM_GROUP = 8
POLL_S = 1.0  # how often an idle worker looks for work another instance queued
SWEEP_S = 5.0
# Errors an item would not get again: it is given back instead of failed.
PASSING = {"model_not_ready", "queue_full", "timeout", "client_disconnected"}


class JobWorker:
    def __init__(
        self,
        leases: Leases,
        app: Any,
        catalog: ModelCatalog,
        settings: Settings,
        metrics: JobMetrics,
        on_store_error: Callable[[BaseException], None],
        on_store_ok: Callable[[], None],
    ) -> None:
        self.leases = leases
        self.app = app
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics
        self.on_store_error = on_store_error
        self.on_store_ok = on_store_ok
        self.instance = settings.instance_name
        self.lease = timedelta(seconds=settings.jobs_lease_s)
        self.in_flight: dict[str, tuple[Claim, asyncio.Task]] = {}
        self.wake = asyncio.Event()
        self._dropped: set[str] = set()  # tokens whose lease is gone: nothing is written for them

    @property
    def capacity(self) -> int:
        if self.settings.jobs_max_in_flight:
            return self.settings.jobs_max_in_flight
        return max(1, math.floor(self.catalog.default.scheduler.max_rows * self.settings.jobs_max_share))

    def poke(self) -> None:
        """New work may be there (a job was just created here)."""
        self.wake.set()

    def drop_job(self, job_id: str) -> None:
        """The job was cancelled or deleted here: stop its items in flight now (other instances notice
        at their next lease renewal)."""
        for token, (claim, task) in list(self.in_flight.items()):
            if claim.job_id == job_id:
                self._dropped.add(token)
                task.cancel()

    # --- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(), name="kronos-jobs-heartbeat")
        next_sweep = 0.0
        backoff = POLL_S
        try:
            while True:
                try:
                    if time.monotonic() >= next_sweep:
                        await self._sweep()
                        next_sweep = time.monotonic() + SWEEP_S
                    claimed = await self._claim()
                    backoff = POLL_S
                except SQLAlchemyError as exc:
                    self.on_store_error(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if not claimed or len(self.in_flight) >= self.capacity:
                    self.wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), POLL_S)
        finally:
            heartbeat.cancel()
            await self._give_back()

    def _works(self, model: str | None) -> bool:
        """The model is loaded and its thread healthy (not stalled, not broken: see model_health.py)."""
        service = self.catalog.services.get(model) if model is not None else self.catalog.default
        if service is None:
            return False
        check = getattr(service, "check_health", None)
        if check is not None:
            check()
        return service.ready

    def _draining(self) -> bool:
        """SIGTERM: the items in flight finish (or are given back at the end); no new ones are claimed."""
        drain = getattr(self.app.state, "drain", None)
        return bool(getattr(drain, "draining", False))

    async def _claim(self) -> int:
        free = self.capacity - len(self.in_flight)
        models = [name for name in self.catalog.services if self._works(name)]
        if free <= 0 or not models or self._draining():
            return 0
        claims = await asyncio.to_thread(self.leases.claim, self.instance, min(free, CLAIM_GROUP), models, self.lease)
        self.on_store_ok()
        for claim in claims:
            task = asyncio.create_task(self._item(claim), name=f"kronos-job-item-{claim.job_id}-{claim.idx}")
            self.in_flight[claim.token] = (claim, task)
        self.metrics.in_flight.set(len(self.in_flight))
        return len(claims)

    async def _sweep(self) -> None:
        await asyncio.to_thread(self.leases.sweep)
        stats = await asyncio.to_thread(self.leases.statistics)
        self.on_store_ok()
        for status in JOB_STATUSES:
            self.metrics.jobs.labels(status).set(stats["jobs"].get(status, 0))
        self.metrics.backlog.set(stats["backlog"])

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            # Only items whose model still works: a model that stalled or broke (readyz 503) lets its leases
            # expire, so another instance takes its items over.
            tokens = [token for token, (claim, _) in self.in_flight.items() if self._works(claim.model)]
            if not tokens:
                continue
            try:
                held = await asyncio.to_thread(self.leases.renew, tokens, self.lease)
            except SQLAlchemyError as exc:
                self.on_store_error(exc)
                continue
            for token in tokens:  # taken over, or its job cancelled or deleted
                if token not in held and token in self.in_flight:
                    self._dropped.add(token)
                    self.in_flight[token][1].cancel()

    # --- one item -------------------------------------------------------------------------
    async def _item(self, claim: Claim) -> None:
        started = time.perf_counter()
        model = claim.model or ""
        try:
            try:
                status, body = await answer(self.app, claim.kind, claim.request.encode())
            except asyncio.CancelledError:
                if claim.token in self._dropped:  # its job was cancelled (or its lease lost: a no-op then)
                    with contextlib.suppress(SQLAlchemyError):
                        if await asyncio.to_thread(self.leases.settle, claim, CANCELLED):
                            self.metrics.items.labels(model, CANCELLED).inc()
                raise
            if status == 200:
                outcome = SUCCEEDED
                written = await asyncio.to_thread(self.leases.settle, claim, SUCCEEDED, body.decode())
            else:
                error = json.loads(body)["error"]
                if error["type"] in PASSING:
                    await asyncio.to_thread(self.leases.release, [claim])
                    await asyncio.sleep(POLL_S)  # e.g. the model stopped: do not spin on it
                    return
                outcome = FAILED
                written = await asyncio.to_thread(self.leases.settle, claim, FAILED, None, error)
            if written:
                self.metrics.items.labels(model, outcome).inc()
                self.metrics.item_duration.labels(model).observe(time.perf_counter() - started)
        except SQLAlchemyError as exc:  # the answer is lost; the lease expires and the item runs again
            self.on_store_error(exc)
        finally:
            self.in_flight.pop(claim.token, None)
            self._dropped.discard(claim.token)
            self.metrics.in_flight.set(len(self.in_flight))
            self.wake.set()

    async def _give_back(self) -> None:
        """Stop every item in flight and give them back unanswered (the instance is stopping)."""
        held = list(self.in_flight.values())
        for _claim, task in held:
            task.cancel()
        if held:
            await asyncio.gather(*(task for _, task in held), return_exceptions=True)
            try:
                await asyncio.to_thread(self.leases.release, [claim for claim, _ in held])
                logger.info("gave back %d job items in flight", len(held))
            except SQLAlchemyError as exc:
                logger.warning("could not give back %d job items (their leases will expire): %s", len(held), exc)
