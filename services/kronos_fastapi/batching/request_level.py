"""Request-level scheduling (``KRONOS_BATCHING=request``): a batch is formed once and runs to its end.

- A batch takes jobs from the queue (``common.py``) in arrival order while both budgets hold, so long
  forecasts form smaller batches that still finish well within the timeout. A job over a budget
  goes alone. No reordering, so no job starves. Series of any length, ``pred_len`` and sampling
  settings share a batch: the model decodes each as it would alone and drops a series' rows once it
  is done.
- ``forecast_splitting`` runs one batch: one that runs out of memory is split in halves, which are
  retried (recursively); an ``InputError`` is isolated the same way, so one bad series fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from model import Forecast, InputError, SeriesInput

from ..errors import ServiceError
from .common import DONE, RUNNING, BatchQueue, Job, OnDone, Outcome, _answer, is_out_of_memory

logger = logging.getLogger("kronos.batching")

# KronosPredictor.forecast: the series, and an on_done keyword.
Predict = Callable[..., Sequence[Forecast | None]]
# A model batch in the model thread: one outcome per series (a Forecast, None when cancelled, or the
# ServiceError that series' request gets); on_done hears of each forecast as soon as it is ready.
RunBatch = Callable[[list[SeriesInput], OnDone | None], Sequence[Forecast | None | ServiceError]]


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


class RequestLevel(BatchQueue):
    """Batches of ``run_batch``, each formed once from the queue and run to its end on the model thread."""

    run_batch: RunBatch

    def _take(self) -> list[Job]:
        """The next batch: jobs in arrival order while both budgets hold (the first always goes)."""
        jobs: list[Job] = []
        rows = tokens = 0
        now = time.monotonic()
        while self._queue or self._background:
            queue = self._queue or self._background  # background jobs after every interactive one
            head = queue[0]
            if jobs and not self._fits(rows + head.rows, tokens + head.tokens):
                break
            if head.background and not self._background_fits(jobs, head, self.max_rows):
                break
            job = queue.popleft()
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

    async def _run_one_batch(self) -> None:
        """Take the next batch, run it on the model thread, answer its jobs."""
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
