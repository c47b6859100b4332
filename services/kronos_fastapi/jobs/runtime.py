"""One instance's jobs: the store, opened (and migrated) in the background at start-up and retried
until it answers, and the worker, started once it does.

The job routes reach the store only through ``JobsRuntime.call``: while the store is being opened or
cannot be reached, they answer 503 (``job_store_unavailable``, naming the database without its
password) and everything else, /v1/predict included, keeps serving. readyz reports the store's
state without failing on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..catalog import ModelCatalog
from ..settings import Settings
from .database import SchemaError, database_url, migrate, open_engine, redacted
from .errors import JobStoreUnavailable
from .leases import Leases
from .metrics import JobMetrics
from .worker import JobWorker

logger = logging.getLogger("kronos.jobs")

T = TypeVar("T")
_RETRY_MAX_S = 30.0


def _short(exc: BaseException) -> str:
    """The database's own message, first line only (no SQL, no links)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")


class JobsRuntime:
    def __init__(self, settings: Settings, catalog: ModelCatalog, registry: Any) -> None:
        self.settings = settings
        self.catalog = catalog
        self.url = database_url(settings.jobs_database_url, settings.jobs_dir)
        self.backend = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self.shown = redacted(self.url)
        self.metrics = JobMetrics(registry)
        self.retention = timedelta(hours=settings.jobs_retention_hours)
        self.engine: Engine | None = None
        self.leases: Leases | None = None
        self.worker: JobWorker | None = None
        self.revision: str | None = None
        self.reason: str | None = "the job store is being opened"
        self._task: asyncio.Task | None = None

    # --- state ----------------------------------------------------------------------------
    @property
    def reachable(self) -> bool:
        return self.leases is not None and self.reason is None

    def store_ok(self) -> None:
        if self.reason is not None and self.leases is not None:
            logger.info("the job store (%s) answers again", self.shown)
        self.reason = None
        self.metrics.store_up.set(1)

    def store_failed(self, exc: BaseException) -> None:
        reason = f"the job store ({self.shown}) is unreachable: {_short(exc)}"
        if reason != self.reason:
            logger.warning("%s", reason)
        self.reason = reason
        self.metrics.store_up.set(0)

    def describe(self) -> dict[str, Any]:
        """The store's state, as readyz reports it."""
        return {
            "enabled": True,
            "database": self.backend,
            "url": self.shown,
            "reachable": self.reachable,
            "reason": self.reason,
            "schema_revision": self.revision,
            "items_in_flight": len(self.worker.in_flight) if self.worker else 0,
        }

    # --- the routes' door to the store ----------------------------------------------------
    async def call(self, method: Callable[..., T], *args: Any) -> T:
        """``method(*args)`` of the store (a ``Leases`` method) in a thread; 503 while it cannot be reached."""
        if self.leases is None:
            raise JobStoreUnavailable(self.reason or "the job store is not open", {"database": self.backend})
        try:
            result = await asyncio.to_thread(method, *args)
        except SQLAlchemyError as exc:
            self.store_failed(exc)
            raise JobStoreUnavailable(self.reason or "the job store failed", {"database": self.backend}) from None
        self.store_ok()
        return result

    @property
    def store(self) -> Leases:
        if self.leases is None:
            raise JobStoreUnavailable(self.reason or "the job store is not open", {"database": self.backend})
        return self.leases

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, app: Any) -> None:
        self._task = asyncio.create_task(self._serve(app), name="kronos-jobs")

    def _open(self) -> None:
        engine = open_engine(self.url)
        try:
            self.revision = migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        self.engine = engine
        self.leases = Leases(engine, self.retention)

    async def _serve(self, app: Any) -> None:
        delay = 1.0
        while self.leases is None:
            try:
                await asyncio.to_thread(self._open)
            except SchemaError as exc:  # waiting does not help: an operator must act
                self.reason = f"the job store ({self.shown}) cannot be used: {exc}"
                logger.error("%s", self.reason)
                return
            except Exception as exc:  # noqa: BLE001 — not there yet (Postgres starting) or unreachable: retry
                self.store_failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        self.store_ok()
        logger.info("job store ready", extra={"database": self.shown, "revision": self.revision})
        self.worker = JobWorker(
            self.leases, app, self.catalog, self.settings, self.metrics, self.store_failed, self.store_ok
        )
        while True:
            try:
                await self.worker.run()
            except Exception:  # noqa: BLE001 — a bug in the loop must not end the jobs for good
                logger.exception("the job worker stopped; restarting it in 5 s")
                await asyncio.sleep(5)

    async def stop(self) -> None:
        """Stop the worker (its items in flight are given back) and close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.engine is not None:
            self.engine.dispose()
