"""Step-level scheduling (``KRONOS_BATCHING=step``, the default, given a step model): iteration-level
scheduling over the queue of ``common.py``.

The model thread runs decode steps in a loop and, before every step, admits queued series while the
budgets hold for the rows already running plus the newcomers; a series leaves the batch (and its
request is answered) as soon as it is done. Fairness: admission is strictly first come, first
served — a series that does not fit yet blocks those behind it until enough running ones finish —
so a stream of short forecasts cannot starve a long one; inside the batch every decoding row gets a
token at every step, and prefill chunks go round-robin. Out of memory in a step: the newest series
is evicted, put back at the head of the queue (it restarts from scratch later, with the same
numbers) and no more rows are admitted than the step then held, until the batch drains; a series
that runs out of memory alone fails alone. Any other error fails the running series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from typing import Protocol

from model import Forecast, SeriesInput

from ..errors import ServiceError
from .common import DONE, QUEUED, RUNNING, BatchQueue, Job, Outcome, _answer, is_out_of_memory

logger = logging.getLogger("kronos.batching")


class StepReport(Protocol):
    finished: list[tuple[Hashable, Forecast]]
    dropped: list[Hashable]
    failed: list[tuple[Hashable, Exception]]


class StepModel(Protocol):
    """What step-level scheduling needs of the model (``model.decoding.engine.DecodeEngine``)."""

    idle: bool

    def admit(self, key: Hashable, series: SeriesInput) -> None: ...
    def step(self) -> StepReport: ...
    def remove(self, key: Hashable) -> None: ...
    def keys(self) -> list[Hashable]: ...


class StepLevel(BatchQueue):
    """Decode steps on the model thread that queued series join and leave, for as long as any run or wait."""

    as_error: Callable[[BaseException], ServiceError]
    on_evict: Callable[[BaseException, int], None] | None
    _row_cap: int | None  # after an out-of-memory eviction: rows the steps held
    _last_finish: float | None

    async def _run_steps(self, model: StepModel) -> None:
        """Run decode steps on the model thread until no series is running or queued."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self._step_loop, model, loop)
        except Exception:  # noqa: BLE001 — whatever happens, the jobs are answered and the queue lives on
            logger.exception("the step loop failed outside the model call")
            with self._lock:
                running, self._running = self._running, []
            for job in running:
                with contextlib.suppress(Exception):
                    model.remove(job)
                job.state = DONE
                _answer(job, ServiceError("the forecast failed; see the server log"))
        self._free_since = time.monotonic()

    def _step_loop(self, model: StepModel, loop: asyncio.AbstractEventLoop) -> None:
        """In the model thread: before each step admit what fits, then step and answer who is done."""
        while not self._closed:
            with self._lock:
                jobs = self._admit()
                if not jobs and not self._running:
                    self._row_cap = None
                    return
            if jobs:
                loop.call_soon_threadsafe(self._changed)
            for job in jobs:
                try:
                    model.admit(job, job.series)
                except Exception as exc:  # noqa: BLE001 — a bad series fails alone
                    self._settle(loop, job, self.as_error(exc))
            if model.idle:
                continue
            try:
                report = model.step()
            except Exception as exc:  # noqa: BLE001 — every failure becomes an answer
                self._step_failed(model, loop, exc)
                continue
            self.metrics.decode_steps.inc()
            self.metrics.step_rows.observe(sum(job.rows for job in self._running))
            for job, forecast in report.finished:
                self._settle(loop, job, forecast)
            for job in report.dropped:
                self._settle(loop, job, None)
            for job, exc in report.failed:
                if not is_out_of_memory(exc):
                    logger.error("decoding a finished series failed", exc_info=exc)
                self._settle(loop, job, self.as_error(exc))

    def _admit(self) -> list[Job]:
        """Under the lock: queued jobs in arrival order while the budgets hold with the running rows
        (the first job of an empty batch always goes); none overtakes one that does not fit. Background
        jobs come after every interactive one, within their share (``common.py``)."""
        rows = sum(job.rows for job in self._running)
        tokens = sum(job.tokens for job in self._running)
        running = bool(self._running)
        cap = self.max_rows if self._row_cap is None else min(self.max_rows, self._row_cap)
        jobs: list[Job] = []
        now = time.monotonic()
        while self._queue or self._background:
            queue = self._queue or self._background
            head = queue[0]
            empty = not self._running and not jobs
            if not empty and not (rows + head.rows <= cap and tokens + head.tokens <= self.max_tokens):
                break
            if head.background and not self._background_fits(self._running, head, cap):
                break
            queue.popleft()
            head.state = RUNNING
            rows += head.rows
            tokens += head.tokens
            jobs.append(head)
            self._running.append(head)
            self.metrics.queue_wait.observe(now - head.enqueued)
        if jobs:
            full = rows >= cap or tokens >= self.max_tokens
            self.metrics.batches.labels("joined" if running else "full" if full else "waited").inc()
            self.metrics.batch_size.observe(len(jobs))
            self.metrics.batch_rows.observe(sum(job.rows for job in jobs))
            self.metrics.batch_tokens.observe(sum(job.tokens for job in jobs))
        return jobs

    def _settle(self, loop: asyncio.AbstractEventLoop, job: Job, outcome: Outcome) -> None:
        """From the model thread: the job left the batch; its request hears of it on the event loop."""
        with self._lock:
            if job in self._running:
                self._running.remove(job)
            job.state = DONE
        if isinstance(outcome, Forecast):
            now = time.monotonic()
            if self._last_finish is not None:  # series answered per second: what drains the queue
                gap, average = now - self._last_finish, self._seconds_per_series
                self._seconds_per_series = gap if average is None else 0.9 * average + 0.1 * gap
            self._last_finish = now
        loop.call_soon_threadsafe(_answer, job, outcome)

    def _step_failed(self, model: StepModel, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        """A step raised (the model is as before the step). Out of memory: evict the newest series
        and retry it later (or fail it, if it is alone); anything else fails every running series."""
        keys = model.keys()
        if is_out_of_memory(exc) and len(keys) > 1:
            newest: Job = keys[-1]
            model.remove(newest)
            with self._lock:
                self._running.remove(newest)
                if newest.state == RUNNING:  # not abandoned meanwhile: back to the head of the queue
                    newest.state = QUEUED
                    newest.series.cancel.clear()
                    self._queue_of(newest).appendleft(newest)
                self._row_cap = sum(job.rows for job in self._running)
            if self.on_evict is not None:
                self.on_evict(exc, len(keys))
            loop.call_soon_threadsafe(self._changed)
            return
        if not is_out_of_memory(exc):
            logger.error("a decode step of %d series failed", len(keys), exc_info=exc)
        for job in keys:
            model.remove(job)
            self._settle(loop, job, self.as_error(exc))
