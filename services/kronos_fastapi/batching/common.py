"""The dynamic batcher between the routes and the model: the series of concurrent requests wait in
one bounded queue and are decoded together, within a budget of sample paths per model batch.

Two ways to run the model (``KRONOS_BATCHING``):

- **step** (the default, given a ``step_model``): iteration-level scheduling. The model thread runs
  decode steps in a loop and, before every step, admits queued series while the budgets hold for
  the rows already running plus the newcomers; a series leaves the batch (and its request is
  answered) as soon as it is done. Fairness: admission is strictly first come, first served — a
  series that does not fit yet blocks those behind it until enough running ones finish — so a
  stream of short forecasts cannot starve a long one; inside the batch every decoding row gets a
  token at every step, and prefill chunks go round-robin. Out of memory in a step: the newest
  series is evicted, put back at the head of the queue (it restarts from scratch later, with the
  same numbers) and no more rows are admitted than the step then held, until the batch drains; a
  series that runs out of memory alone fails alone. Any other error fails the running series.
- **request**: a batch is formed once and runs to its end, as described below.

- A series is one job; a ``/v1/predict/batch`` request queues one job per item and waits for all.
- A batch waits at most ``wait_s`` for company, counted from when its first job arrived or the model
  became free, whichever is later, unless the queue already holds a full batch. While the model is
  busy, jobs pile up; once it is free they wait that little longer for the clients just answered,
  who are about to send their next requests. Without it, clients that were split over two batches
  once stay split for good: each group arrives while the other's batch runs.
- A batch takes jobs in arrival order while two budgets hold: ``max_rows`` sample paths (the rows the
  decoder carries) and ``max_tokens`` tokens (each row's context plus forecast: what its KV cache holds
  and, on a CPU, what its decoding costs), so long forecasts form smaller batches that still finish
  well within the timeout. A job over a budget goes alone. No reordering, so no job starves. Series
  of any length, ``pred_len`` and sampling settings share a batch: the model decodes each as it
  would alone and drops a series' rows once it is done.
- Admission is all or nothing against ``max_queue``, before anything is queued: 503 + Retry-After.
- A request that times out or whose client goes away leaves the queue at once; once decoding, its
  rows leave the batch at the next step (the model's cancel event).
- ``forecast_splitting`` runs one batch: one that runs out of memory is split in halves, which are
  retried (recursively); an ``InputError`` is isolated the same way, so one bad series fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from model import Forecast, InputError, SeriesInput

from ..errors import ForecastTimeout, ModelNotReady, QueueFull, ServiceError
from ..metrics import ServiceMetrics

logger = logging.getLogger("kronos.batching")

QUEUED, RUNNING, DONE = "queued", "running", "done"
# Retry-After for a full queue: the estimated time to drain it, within these bounds.
RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S = 1, 60

Outcome = Forecast | None | BaseException
# Told, from the model thread, that series i of a batch is done: its answer need not wait for the rest.
OnDone = Callable[[int, Forecast], None]
# KronosPredictor.forecast: the series, and an on_done keyword.
Predict = Callable[..., Sequence[Forecast | None]]
# A model batch in the model thread: one outcome per series (a Forecast, None when cancelled, or the
# ServiceError that series' request gets); on_done hears of each forecast as soon as it is ready.
RunBatch = Callable[[list[SeriesInput], OnDone | None], Sequence[Forecast | None | ServiceError]]


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


def is_out_of_memory(exc: BaseException) -> bool:
    """A device (or host) allocation failure: worth retrying with fewer series."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _cancelled(series: SeriesInput) -> bool:
    return series.cancel is not None and series.cancel.is_set()


def forecast_splitting(
    predict: Predict,
    series: Sequence[SeriesInput],
    on_split: Callable[[BaseException, int], None] | None = None,
    on_done: OnDone | None = None,
) -> list[Outcome]:
    """``predict(series)`` with one outcome per series: its Forecast, None when it was cancelled, or
    the exception that series alone raises.

    Out of memory or an ``InputError``: the batch is split in halves and each is retried, down to
    one series, which then gets the error. Every series gets the numbers it would get alone, so a
    retry changes nothing but the time. Any other exception fails the whole batch: retrying it
    would cost up to 2n - 1 more model calls on an error that probably is not the input's.
    Cancelled series are left out of every attempt. ``on_done(i, forecast)`` (i indexes ``series``)
    may hear of a series before the call returns, and again from a retry after a split.
    """
    outcomes: list[Outcome] = [None] * len(series)
    live = [i for i, s in enumerate(series) if not _cancelled(s)]
    if not live:
        return outcomes

    def part(indices: list[int]) -> OnDone | None:
        return None if on_done is None else lambda j, forecast: on_done(indices[j], forecast)

    try:
        kwargs = {} if on_done is None else {"on_done": part(live)}
        results: list[Outcome] = list(predict([series[i] for i in live], **kwargs))
    except Exception as exc:  # noqa: BLE001 — every failure becomes an outcome; the caller maps it
        if len(live) > 1 and (is_out_of_memory(exc) or isinstance(exc, InputError)):
            if on_split is not None:
                on_split(exc, len(live))
            halves = (live[: len(live) // 2], live[len(live) // 2 :])
            results = []
            for half in halves:
                results += forecast_splitting(predict, [series[i] for i in half], on_split, part(half))
        else:
            results = [exc] * len(live)
    for i, result in zip(live, results):
        outcomes[i] = result
    return outcomes


def _answer(job: Job, outcome: Outcome) -> None:
    """Settle a job's future, unless its request already ended (answered early, timeout, disconnect)."""
    if job.future.done():
        return
    if isinstance(outcome, Forecast):
        job.future.set_result(outcome)
    elif isinstance(outcome, BaseException):
        job.future.set_exception(outcome)
    else:
        job.future.cancel()


@dataclass(eq=False)
class Job:
    """One queued series and the future its request awaits."""

    series: SeriesInput  # carries its own cancel event
    future: asyncio.Future
    enqueued: float  # time.monotonic()
    tokens: int  # sample_count × (context seen + pred_len)
    state: str = QUEUED

    @property
    def rows(self) -> int:
        return self.series.sample_count


class BatchScheduler:
    """The queue and the task that turns it into model batches, run one at a time on ``executor``."""

    def __init__(
        self,
        run_batch: RunBatch,
        executor: Executor,
        metrics: ServiceMetrics,
        *,
        max_rows: int,
        max_tokens: int,
        context: int,
        wait_s: float,
        max_queue: int,
        timeout_s: float,
        step_model: Callable[[], StepModel | None] | None = None,
        as_error: Callable[[BaseException], ServiceError] | None = None,
        on_evict: Callable[[BaseException, int], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        # Step-level scheduling when this returns a model (else request-level batches of run_batch).
        self.step_model = step_model
        self.as_error = as_error or (lambda exc: ServiceError("the forecast failed; see the server log"))
        self.on_evict = on_evict
        self.executor = executor
        self.metrics = metrics
        # The service sets both budgets again for the device the model loaded on.
        self.max_rows = max_rows
        self.max_tokens = max_tokens
        self.context = context  # the model's max_context: older rows are not seen
        self.wait_s = wait_s
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._queue: deque[Job] = deque()
        self._running: list[Job] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self._seconds_per_series: float | None = None  # moving average of model time per series
        self._free_since = 0.0  # time.monotonic() when the last batch ended
        # Step level: the model thread takes jobs from the queue while requests add and abandon them.
        self._lock = threading.Lock()
        self._row_cap: int | None = None  # after an out-of-memory eviction: rows the steps held
        self._last_finish: float | None = None

    # --- the requests' side -----------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Series waiting for the model."""
        return len(self._queue)

    def retry_after_s(self) -> int:
        """How long the queue now takes to drain, by the recent model time per series."""
        per_series = self._seconds_per_series or 0.0
        return max(RETRY_AFTER_MIN_S, min(RETRY_AFTER_MAX_S, math.ceil(self.depth * per_series)))

    async def submit(self, series: Sequence[SeriesInput]) -> list[Forecast]:
        """Queue every series (or none), and return their forecasts within ``timeout_s``.

        Raises QueueFull, ForecastTimeout, or the ServiceError of the first series that failed;
        in every case the request's other series leave the queue or their batch.
        """
        if self._closed:
            raise ModelNotReady("the service is shutting down", {"state": "stopping"})
        if self.depth + len(series) > self.max_queue:
            retry = self.retry_after_s()
            raise QueueFull(
                f"the forecast queue is full ({self.depth} series waiting, the limit is {self.max_queue}: "
                f"KRONOS_MAX_QUEUE); retry in {retry} s",
                {"queue_depth": self.depth, "max_queue": self.max_queue, "series": len(series), "retry_after_s": retry},
                {"Retry-After": str(retry)},
            )
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._serve(), name="kronos-batcher")
            self._task.add_done_callback(self._stopped)
        now = time.monotonic()
        jobs = [Job(replace(s, cancel=threading.Event()), loop.create_future(), now, self._tokens(s)) for s in series]
        with self._lock:
            self._queue.extend(jobs)
        self._changed()
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), self.timeout_s))
        except asyncio.TimeoutError:
            self._abandon(jobs, "timeout")
            raise ForecastTimeout(
                f"the forecast took longer than {self.timeout_s:g} s (KRONOS_REQUEST_TIMEOUT_S), waiting included",
                {"timeout_s": self.timeout_s},
            ) from None
        except asyncio.CancelledError:  # the route cancels us when the client disconnects
            self._abandon(jobs, "disconnect")
            raise
        except ServiceError as error:
            if len(jobs) > 1:  # say which item failed
                failed = [i for i, job in enumerate(jobs) if job.future.done() and not job.future.cancelled()]
                index = next(i for i in failed if jobs[i].future.exception() is error)
                error.message = f"batch item {index}: {error.message}"
            self._abandon(jobs, "failed")
            raise

    def _stopped(self, task: asyncio.Task) -> None:
        """A batcher that died of a bug is started again by the next request (the queue is kept)."""
        if not task.cancelled() and task.exception() is not None:
            logger.error("the batcher stopped; the next request restarts it", exc_info=task.exception())
            self._task = None

    def _abandon(self, jobs: list[Job], reason: str) -> None:
        """Take the request's unfinished series out: from the queue, or from their running batch."""
        left = 0
        with self._lock:
            for job in jobs:
                if job.state == QUEUED:
                    self._queue.remove(job)
                    left += 1
                elif job.state == RUNNING:
                    job.series.cancel.set()
                    left += 1
                job.state = DONE
            if not job.future.done():
                job.future.cancel()
        if left:
            self.metrics.cancelled_series.labels(reason).inc(left)
            self._changed()

    def _changed(self) -> None:
        self.metrics.queue_depth.set(self.depth)
        self._wakeup.set()

    # --- the model's side -------------------------------------------------------------------
    def _tokens(self, series: SeriesInput) -> int:
        return series.sample_count * (min(len(series.candles), self.context) + series.pred_len)

    def _fits(self, rows: int, tokens: int) -> bool:
        return rows <= self.max_rows and tokens <= self.max_tokens

    def _full(self) -> bool:
        """The queue holds at least a full batch: waiting longer cannot make the next one bigger."""
        with self._lock:
            rows, tokens = sum(job.rows for job in self._queue), sum(job.tokens for job in self._queue)
        return rows >= self.max_rows or tokens >= self.max_tokens

    async def _company(self) -> None:
        """Return once there is a batch to run: a full one, or one that has waited ``wait_s`` since its
        first job arrived or the model became free."""
        while True:
            if self._queue:
                if self._full():
                    return
                remaining = max(self._queue[0].enqueued, self._free_since) + self.wait_s - time.monotonic()
                if remaining <= 0:
                    return
            self._wakeup.clear()
            if not self._queue:
                await self._wakeup.wait()
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take(self) -> list[Job]:
        """The next batch: jobs in arrival order while both budgets hold (the first always goes)."""
        jobs: list[Job] = []
        rows = tokens = 0
        now = time.monotonic()
        while self._queue and (not jobs or self._fits(rows + self._queue[0].rows, tokens + self._queue[0].tokens)):
            job = self._queue.popleft()
            job.state = RUNNING
            rows += job.rows
            tokens += job.tokens
            jobs.append(job)
            self.metrics.queue_wait.observe(now - job.enqueued)
        self.metrics.batch_size.observe(len(jobs))
        self.metrics.batch_rows.observe(rows)
        self.metrics.batch_tokens.observe(tokens)
        self._changed()
        return jobs

    async def _serve(self) -> None:
        """Forever: wait for a batch, run it on the model thread, answer its jobs."""
        while True:
            await self._company()
            model = self.step_model() if self.step_model is not None else None
            if model is not None:
                await self._run_steps(model)
                continue
            reason = "full" if self._full() else "waited"
            jobs = self._take()
            self.metrics.batches.labels(reason).inc()
            self._running = jobs
            try:
                outcomes = await self._run(jobs)
            except Exception:  # noqa: BLE001 — whatever happens, the jobs are answered and the queue lives on
                logger.exception("a model batch failed outside the model call")
                outcomes = [ServiceError("the forecast failed; see the server log") for _ in jobs]
            self._running = []
            self._free_since = time.monotonic()
            for job, outcome in zip(jobs, outcomes):
                job.state = DONE
                _answer(job, outcome)

    async def _run(self, jobs: list[Job]) -> Sequence[Forecast | None | BaseException]:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()

        def on_done(i: int, forecast: Forecast) -> None:  # in the model thread
            loop.call_soon_threadsafe(_answer, jobs[i], forecast)

        outcomes = await loop.run_in_executor(self.executor, self.run_batch, [job.series for job in jobs], on_done)
        elapsed = time.perf_counter() - started
        self.metrics.batch_duration.observe(elapsed)
        average, per_series = self._seconds_per_series, elapsed / len(jobs)
        self._seconds_per_series = per_series if average is None else 0.7 * average + 0.3 * per_series
        return outcomes

    # --- step level ------------------------------------------------------------------------
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
        (the first job of an empty batch always goes); none overtakes one that does not fit."""
        rows = sum(job.rows for job in self._running)
        tokens = sum(job.tokens for job in self._running)
        running = bool(self._running)
        cap = self.max_rows if self._row_cap is None else min(self.max_rows, self._row_cap)
        jobs: list[Job] = []
        now = time.monotonic()
        while self._queue:
            head = self._queue[0]
            empty = not self._running and not jobs
            if not empty and not (rows + head.rows <= cap and tokens + head.tokens <= self.max_tokens):
                break
            self._queue.popleft()
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
                    self._queue.appendleft(newest)
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

    async def close(self) -> None:
        """Stop batching: queued and running requests get 503 (the running batch stops at its next step)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in [*self._queue, *self._running]:
            job.series.cancel.set()
            job.state = DONE
            if not job.future.done():
                job.future.set_exception(ModelNotReady("the service is shutting down", {"state": "stopping"}))
        self._queue.clear()
        self._changed()
