"""Job items and interactive requests in one model scheduler: a job item (submitted under
``background_priority()``) is admitted behind every waiting interactive series, job items hold at most
``background_share`` of the batch budgets, and they neither count against KRONOS_MAX_QUEUE nor time
out; their numbers are the ones they get alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from test_batching_scheduler import StandInModel, new_engine, scheduler_for, series, step_scheduler, until

from services.kronos_fastapi.batching import background_priority

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: as in the servers


async def _background(scheduler, items):
    with background_priority():
        return await scheduler.submit(items)


@pytest.mark.parametrize(
    "beside, batches",
    [
        # A CPU: beside 2 interactive rows, job items hold at most half as many (but one always runs).
        (True, [[0], [1, 2, 10], [11, 12], [13, 14]]),
        # A GPU: job items hold at most half of the 4-row budget, whatever runs beside them.
        (False, [[0], [1, 2, 10, 11], [12, 13], [14]]),
    ],
)
def test_request_level_interactive_series_go_first_and_jobs_keep_to_their_share(beside, batches):
    model = StandInModel()
    scheduler, _ = scheduler_for(model, max_rows=4, max_queue=2)
    scheduler.background_share = 0.5
    scheduler.background_beside_interactive = beside

    async def scenario():
        first = asyncio.ensure_future(scheduler.submit([series(seed=0)]))
        await asyncio.to_thread(model.started.wait, 5)  # the model is busy ...
        jobs = [asyncio.ensure_future(_background(scheduler, [series(seed=10 + i)])) for i in range(5)]
        await until(lambda: scheduler.background_depth == 5)
        people = [asyncio.ensure_future(scheduler.submit([series(seed=i)])) for i in (1, 2)]  # ... arrive later
        await until(lambda: scheduler.depth == 2)
        for _ in range(5):
            model.release.release()
        return await asyncio.gather(first, *people, *jobs)

    results = asyncio.run(scenario())
    assert [f.seed for (f,) in results] == [0, 1, 2, 10, 11, 12, 13, 14]
    # The two interactive series first (they arrived after the jobs), the job items within their share.
    assert model.batches == batches


def test_jobs_are_outside_the_queue_limit_and_the_request_timeout():
    model = StandInModel()
    scheduler, _ = scheduler_for(model, max_rows=1, max_queue=1, timeout_s=0.2)

    async def scenario():
        jobs = asyncio.ensure_future(_background(scheduler, [series(seed=i) for i in range(3)]))  # 3 > max_queue
        await asyncio.to_thread(model.started.wait, 5)
        await asyncio.sleep(0.3)  # longer than the request timeout: a job item does not time out
        person = asyncio.ensure_future(scheduler.submit([series(seed=9)]))  # the queue still has room
        await until(lambda: scheduler.depth == 1)
        for _ in range(4):
            model.release.release()
        return await jobs, await person

    forecasts, (answer,) = asyncio.run(scenario())
    assert [f.seed for f in forecasts] == [0, 1, 2] and answer.seed == 9
    assert model.batches == [[0], [9], [1], [2]]  # the request overtook the job's waiting items


def test_step_level_a_request_joins_ahead_of_waiting_job_items_and_jobs_hold_their_share(predictor):
    engine = new_engine(predictor, slots=8)
    scheduler, metrics = step_scheduler(engine, max_rows=8)
    scheduler.background_share = 0.5
    admitted: list[int] = []
    held: list[int] = []
    real_admit, real_step = engine.admit, engine.step

    def admit(key, s):
        admitted.append(s.seed)
        real_admit(key, s)

    def step():
        with scheduler._lock:
            held.append(sum(j.rows for j in scheduler._running if j.background))
        return real_step()

    engine.admit, engine.step = admit, step
    job_items = [series(30, 40, 2, seed=100 + i) for i in range(6)]  # 2 rows each: 2 of them fill the share
    person = series(30, 5, 1, seed=7)

    async def scenario():
        jobs = [asyncio.ensure_future(_background(scheduler, [s])) for s in job_items]
        await until(lambda: metrics.decode_steps._value.get() >= 3, timeout=120)  # job items decode ...
        (answer,) = await scheduler.submit([person])  # ... when a request comes
        return answer, await asyncio.gather(*jobs)

    answer, done = asyncio.run(scenario())
    assert max(held) <= 4  # never more than half of the 8 rows
    assert admitted.index(7) <= 2  # in at the next step, before any job item still waiting
    assert np.array_equal(answer.samples, predictor.forecast([person])[0].samples)
    for (forecast,), s in zip(done, job_items):
        assert np.array_equal(forecast.samples, predictor.forecast([s])[0].samples)
