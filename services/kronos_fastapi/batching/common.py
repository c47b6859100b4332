"""What both schedulers share: the bounded queue the series of concurrent requests wait in, and the
request's side of it (admission, Retry-After, the deadline, cancellation, shutdown).

- A series is one job; a ``/v1/predict/batch`` request queues one job per item and waits for all.
- Admission is all or nothing against ``max_queue``, before anything is queued: 503 + Retry-After,
  the estimated time to drain the queue at the recent model time per series.
- Two budgets bound what decodes at once: ``max_rows`` sample paths (the rows the decoder carries)
  and ``max_tokens`` tokens (each row's context plus forecast: what its KV cache holds and, on a CPU,
  what its decoding costs).
- A batch waits at most ``wait_s`` for company, counted from when its first job arrived or the model
  became free, whichever is later, unless the queue already holds a full batch. While the model is
  busy, jobs pile up; once it is free they wait that little longer for the clients just answered,
  who are about to send their next requests. Without it, clients that were split over two batches
  once stay split for good: each group arrives while the other's batch runs.
- A request that times out or whose client goes away leaves the queue at once; once decoding, its
  rows leave the batch at the next step (the model's cancel event).

How the queue turns into model batches is the schedulers' part: ``request_level.py`` and
``step_level.py``.

**Background work** (``/v1/jobs`` items, submitted under ``background_priority()``) waits in a queue
of its own behind every interactive request: it is admitted only while no interactive series waits,
its rows and tokens hold at most ``background_share`` of the budgets (one background series may run
alone when none does), it does not count against ``max_queue`` (the job worker bounds what it has in
flight) and it has no deadline. Where a step's time grows with its rows (a CPU:
``background_beside_interactive``), beside running interactive series background work also holds at
most ``background_share`` of *their* rows and tokens, so their steps are at most 1 + share slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import torch

from model import Forecast, SeriesInput

from ..errors import ForecastTimeout, ModelNotReady, QueueFull, ServiceError
from ..metrics import ServiceMetrics

logger = logging.getLogger("kronos.batching")

QUEUED, RUNNING, DONE = "queued", "running", "done"
# Retry-After for a full queue: the estimated time to drain it, within these bounds.
RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S = 1, 60

Outcome = Forecast | None | BaseException
# Set by the job worker: series submitted in this context queue as background work (see the docstring).
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("kronos_background", default=False)


@contextlib.contextmanager
def background_priority():
    """Series submitted within (from this task and the tasks it starts) queue as background work."""
    token = BACKGROUND.set(True)
    try:
        yield
    finally:
        BACKGROUND.reset(token)


# Told, from the model thread, that series i of a batch is done: its answer need not wait for the rest.
OnDone = Callable[[int, Forecast], None]


def is_out_of_memory(exc: BaseException) -> bool:
    """A device (or host) allocation failure: worth retrying with fewer series."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


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


def _read_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class Job:
    """One queued series and the future its request awaits."""

    series: SeriesInput  # carries its own cancel event
    future: asyncio.Future
    enqueued: float  # time.monotonic()
    tokens: int  # sample_count × (context seen + pred_len)
    state: str = QUEUED
    background: bool = False  # a job item: queued behind interactive requests, within background_share

    @property
    def rows(self) -> int:
        return self.series.sample_count


class BatchQueue:
    """The queue both schedulers take from, and the requests' side of it. A scheduler adds ``_serve``:
    the task, started by the first request, that turns the queue into model batches run one at a time
    on ``executor``."""

    def __init__(
        self,
        executor: Executor,
        metrics: ServiceMetrics,
        *,
        max_rows: int,
        max_tokens: int,
        context: int,
        wait_s: float,
        max_queue: int,
        timeout_s: float,
    ) -> None:
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
        self._background: deque[Job] = deque()  # job items, admitted behind every interactive series
        self.background_share = 1.0  # most of each budget background rows and tokens may hold
        self.background_beside_interactive = True  # also at most that share of the interactive rows (CPU)
        self._running: list[Job] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self._seconds_per_series: float | None = None  # moving average of model time per series
        self._free_since = 0.0  # time.monotonic() when the last batch ended
        # Step level: the model thread takes jobs from the queue while requests add and abandon them.
        self._lock = threading.Lock()

    # --- the requests' side -----------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Series waiting for the model."""
        return len(self._queue)

    @property
    def background_depth(self) -> int:
        """Background series (job items) waiting for the model."""
        return len(self._background)

    def _queue_of(self, job: Job) -> deque[Job]:
        return self._background if job.background else self._queue

    def retry_after_s(self) -> int:
        """How long the queue now takes to drain, by the recent model time per series."""
        per_series = self._seconds_per_series or 0.0
        return max(RETRY_AFTER_MIN_S, min(RETRY_AFTER_MAX_S, math.ceil(self.depth * per_series)))

    async def submit(self, series: Sequence[SeriesInput], partial: bool = False) -> list:
        """Queue every series (or none), and return their forecasts within ``timeout_s``.

        Raises QueueFull, ForecastTimeout, or the ServiceError of the first series that failed;
        in every case the request's other series leave the queue or their batch. ``partial``: each
        series' outcome instead, its Forecast or its own ServiceError (ForecastTimeout for those
        unfinished at the deadline, which then leave); admission stays all or nothing.
        """
        if self._closed:
            raise ModelNotReady("the service is shutting down", {"state": "stopping"})
        background = BACKGROUND.get()
        if not background and self.depth + len(series) > self.max_queue:
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
        jobs = [
            Job(replace(s, cancel=threading.Event()), loop.create_future(), now, self._tokens(s), background=background)
            for s in series
        ]
        with self._lock:
            (self._background if background else self._queue).extend(jobs)
        self._changed()
        try:
            timeout = None if background else self.timeout_s
            if partial:
                return await self._settled(jobs, timeout)
            gathered = asyncio.gather(*(job.future for job in jobs))
            # A gather cancelled with its request (a timeout, a client gone) ends holding a CancelledError
            # that nobody awaits; read it, or asyncio logs "_GatheringFuture exception was never retrieved".
            gathered.add_done_callback(_read_outcome)
            return list(await asyncio.wait_for(gathered, timeout))
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

    async def _settled(self, jobs: list[Job], timeout: float | None) -> list[Forecast | ServiceError]:
        """Every job's outcome by the deadline: its forecast, its own error, or ForecastTimeout for the
        unfinished, which leave the queue or their batch (what finished is kept)."""
        await asyncio.wait([job.future for job in jobs], timeout=timeout)
        late = [job for job in jobs if not job.future.done()]
        if late:
            self._abandon(late, "timeout")
        outcomes: list[Forecast | ServiceError] = []
        for job in jobs:
            if job in late or job.future.cancelled():
                outcomes.append(
                    ForecastTimeout(
                        f"not finished within {self.timeout_s:g} s (KRONOS_REQUEST_TIMEOUT_S), waiting included",
                        {"timeout_s": self.timeout_s},
                    )
                )
            elif job.future.exception() is not None:
                error = job.future.exception()
                outcomes.append(
                    error
                    if isinstance(error, ServiceError)
                    else ServiceError("the forecast failed; see the server log")
                )
            else:
                outcomes.append(job.future.result())
        return outcomes

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
                    self._queue_of(job).remove(job)
                    left += 1
                elif job.state == RUNNING:
                    job.series.cancel.set()
                    left += 1
                job.state = DONE
                if not job.future.done():  # every one: an answer arriving later is not left unread
                    job.future.cancel()
        if left:
            self.metrics.cancelled_series.labels(reason).inc(left)
            self._changed()

    def _changed(self) -> None:
        self.metrics.queue_depth.set(self.depth)
        self._wakeup.set()

    # --- the model's side: budgets and waiting for company ----------------------------------
    def _tokens(self, series: SeriesInput) -> int:
        return series.sample_count * (min(len(series.candles), self.context) + series.pred_len)

    def _fits(self, rows: int, tokens: int) -> bool:
        return rows <= self.max_rows and tokens <= self.max_tokens

    def _background_fits(self, running: list[Job], head: Job, row_cap: int) -> bool:
        """A background job may join: its kind then holds at most background_share of each budget (or
        it is the only background job running, so a job item bigger than the share still runs)."""
        rows = sum(job.rows for job in running if job.background)
        tokens = sum(job.tokens for job in running if job.background)
        if not rows:
            return True
        share = self.background_share
        row_limit, token_limit = row_cap * share, self.max_tokens * share
        interactive = [job for job in running if not job.background]
        if interactive and self.background_beside_interactive:
            row_limit = min(row_limit, share * sum(job.rows for job in interactive))
            token_limit = min(token_limit, share * sum(job.tokens for job in interactive))
        return rows + head.rows <= row_limit and tokens + head.tokens <= token_limit

    def _full(self) -> bool:
        """The queue holds at least a full batch: waiting longer cannot make the next one bigger."""
        with self._lock:
            waiting = [*self._queue, *self._background]
        rows, tokens = sum(job.rows for job in waiting), sum(job.tokens for job in waiting)
        return rows >= self.max_rows or tokens >= self.max_tokens

    def _first_enqueued(self) -> float | None:
        heads = [q[0].enqueued for q in (self._queue, self._background) if q]
        return min(heads) if heads else None

    async def _company(self) -> None:
        """Return once there is a batch to run: a full one, or one that has waited ``wait_s`` since its
        first job arrived or the model became free."""
        while True:
            first = self._first_enqueued()
            if first is not None:
                if self._full():
                    return
                remaining = max(first, self._free_since) + self.wait_s - time.monotonic()
                if remaining <= 0:
                    return
            self._wakeup.clear()
            if first is None:
                await self._wakeup.wait()
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)

    async def _serve(self) -> None:
        """Forever: wait for a batch, run it on the model thread, answer its jobs (the scheduler's part)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop batching: queued and running requests get 503 (the running batch stops at its next step)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in [*self._queue, *self._background, *self._running]:
            job.series.cancel.set()
            job.state = DONE
            if not job.future.done():
                job.future.set_exception(ModelNotReady("the service is shutting down", {"state": "stopping"}))
        self._queue.clear()
        self._background.clear()
        self._changed()
