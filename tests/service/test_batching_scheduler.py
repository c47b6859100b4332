"""The batching scheduler in-process: the out-of-memory split-and-retry with the real tiny model and
injected failures, and the queue's rules (batch forming, backpressure, timeouts, cancellation,
failures, shutdown) with a stand-in model whose batches end when the test says."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import torch

from model import Forecast, InputError, Kronos, KronosPredictor, KronosTokenizer, SeriesInput
from model.checkpoints.bundled import bundled_model_path
from services.kronos_fastapi import load_settings
from services.kronos_fastapi.batching import BatchScheduler, forecast_splitting, is_out_of_memory
from services.kronos_fastapi.errors import (
    DeviceOutOfMemory,
    ForecastTimeout,
    InvalidRequest,
    ModelNotReady,
    QueueFull,
    ServiceError,
)
from services.kronos_fastapi.metrics import ServiceMetrics
from services.kronos_fastapi.service import ForecastService
from services.kronos_fastapi.settings import SettingsError

CALENDAR = pd.date_range("2024-01-01", periods=400, freq="h")


def series(rows: int = 20, pred_len: int = 6, sample_count: int = 1, seed: int = 0, **sampling) -> SeriesInput:
    walk = 100 + np.cumsum(np.random.default_rng(rows + seed).normal(size=(rows, 1)), axis=0)
    candles = np.hstack([walk, walk + 1, walk - 1, walk + 0.5])
    return SeriesInput(
        candles, CALENDAR[:rows], CALENDAR[rows : rows + pred_len], sample_count=sample_count, seed=seed, **sampling
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: as in the servers


def assert_same(batched: Forecast, solo: Forecast) -> None:
    assert batched.seed == solo.seed
    np.testing.assert_allclose(batched.samples, solo.samples, rtol=1e-5, atol=1e-6)


MIXED = [
    series(20, 6, 1, seed=1),
    series(60, 3, 3, seed=2, temperature=0.7, top_k=20),
    series(2, 9, 2, seed=3, top_p=0.5),
    series(35, 4, 1, seed=4),
]


# --- split and retry -----------------------------------------------------------------------------


def oom_above(predict, most_rows: int, calls: list):
    """``predict`` that runs out of CUDA memory for batches of more than ``most_rows`` sample paths."""

    def run(batch: list[SeriesInput]):
        calls.append(len(batch))
        if sum(s.sample_count for s in batch) > most_rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (injected)")
        return predict(batch)

    return run


def test_an_out_of_memory_batch_is_split_until_it_fits_and_the_numbers_do_not_change(predictor):
    calls: list[int] = []
    splits: list[int] = []
    outcomes = forecast_splitting(oom_above(predictor.forecast, 3, calls), MIXED, lambda exc, n: splits.append(n))
    # 4 series (7 rows) fail, then [0, 1] (4 rows) fails, [0], [1] and [2, 3] (3 rows) fit.
    assert calls == [4, 2, 1, 1, 2]
    assert splits == [4, 2]
    for outcome, alone in zip(outcomes, MIXED):
        assert isinstance(outcome, Forecast)
        assert_same(outcome, predictor.forecast([alone])[0])


def test_each_series_is_reported_done_with_its_own_index_across_splits(predictor):
    def run(batch: list[SeriesInput], **options):  # out of memory above 3 sample paths, as above
        if sum(s.sample_count for s in batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return predictor.forecast(batch, **options)

    heard: dict[int, Forecast] = {}
    outcomes = forecast_splitting(run, MIXED, None, lambda i, forecast: heard.setdefault(i, forecast))
    assert sorted(heard) == [0, 1, 2, 3]
    for i, forecast in heard.items():
        assert forecast is outcomes[i]
        assert_same(forecast, predictor.forecast([MIXED[i]])[0])


def test_a_short_series_is_answered_while_its_long_batch_mate_still_decodes(predictor):
    def run_batch(batch: list[SeriesInput], on_done) -> list:
        return forecast_splitting(predictor.forecast, batch, None, on_done)

    from concurrent.futures import ThreadPoolExecutor

    options = {"max_rows": 8, "max_tokens": 10_000, "context": 512, "max_queue": 8, "timeout_s": 60.0}
    metrics = ServiceMetrics().for_model("test")
    scheduler = BatchScheduler(run_batch, ThreadPoolExecutor(1), metrics, wait_s=0.2, **options)
    short, long = series(30, 2, seed=21), series(30, 400, seed=22)

    async def scenario():
        quick = asyncio.ensure_future(scheduler.submit([short]))
        slow = asyncio.ensure_future(scheduler.submit([long]))
        (answer,) = await quick
        still_decoding = not slow.done()
        (long_answer,) = await slow
        return answer, still_decoding, long_answer

    answer, still_decoding, long_answer = asyncio.run(scenario())
    assert still_decoding  # one batch of both (wait_s 0.2), yet the short one did not wait 398 steps
    assert_same(answer, predictor.forecast([short])[0])
    assert_same(long_answer, predictor.forecast([long])[0])


def test_a_series_that_does_not_fit_alone_fails_alone(predictor):
    big = series(20, 4, sample_count=5, seed=9)
    outcomes = forecast_splitting(oom_above(predictor.forecast, 4, []), [MIXED[0], big, MIXED[3]])
    assert isinstance(outcomes[0], Forecast) and isinstance(outcomes[2], Forecast)
    assert isinstance(outcomes[1], torch.cuda.OutOfMemoryError)


def test_an_invalid_series_is_isolated_from_its_batch_mates(predictor):
    broken = series(20, 4, seed=5)
    broken.candles = broken.candles.copy()
    broken.candles[3, 1] = np.nan  # the model refuses it with an InputError
    outcomes = forecast_splitting(predictor.forecast, [MIXED[0], MIXED[1], broken, MIXED[3]])
    assert isinstance(outcomes[2], InputError)
    for i in (0, 1, 3):
        assert_same(outcomes[i], predictor.forecast([MIXED[i]])[0])


def test_any_other_error_fails_the_whole_batch_without_retries():
    calls = []

    def broken(batch):
        calls.append(len(batch))
        raise RuntimeError("a bug")

    outcomes = forecast_splitting(broken, MIXED)
    assert calls == [4]
    assert all(isinstance(o, RuntimeError) for o in outcomes)


def test_cancelled_series_are_left_out():
    seen = []

    def predict(batch):
        seen.extend(s.seed for s in batch)
        return ["forecast"] * len(batch)

    batch = [series(seed=1), series(seed=2, cancel=threading.Event()), series(seed=3)]
    batch[1].cancel.set()
    assert forecast_splitting(predict, batch) == ["forecast", None, "forecast"]
    assert seen == [1, 3]


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    )
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


class FakePredictor:
    """Stands in for the predictor object: only its ``forecast`` is used."""

    def __init__(self, forecast) -> None:
        self.forecast = forecast


def refuse(batch):
    raise InputError("candles: row 3 column high is nan (must be finite)")


def test_the_service_maps_outcomes_to_errors(predictor):
    service = ForecastService(load_settings(env_file=None), ServiceMetrics().for_model("test"))
    service.predictor, service.device = FakePredictor(oom_above(predictor.forecast, 2, [])), "cuda:0"
    ok, too_big = service._run_batch([MIXED[0], series(sample_count=3)])
    assert isinstance(ok, Forecast)
    assert isinstance(too_big, DeviceOutOfMemory) and too_big.status_code == 503
    assert too_big.headers == {"X-Kronos-Retry-On": "cpu"}  # a GPU instance sends it to the CPU one
    assert service.metrics.batch_splits._value.get() == 1
    service.device = "cpu"
    assert service._run_batch([series(sample_count=3)])[0].headers == {}
    service.predictor = FakePredictor(refuse)
    (refused,) = service._run_batch([MIXED[0]])
    assert isinstance(refused, InvalidRequest) and refused.status_code == 422
    service._executor.shutdown()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_cuda_out_of_memory_splits_the_batch():
    path = bundled_model_path()
    gpu = KronosPredictor(Kronos.from_pretrained(path), KronosTokenizer.from_pretrained(path / "tokenizer"), "cuda")

    def predict(batch):
        if len(batch) > 1:
            torch.empty(2**45, dtype=torch.uint8, device="cuda")  # 32 TiB: a real allocator failure
        return gpu.forecast(batch)

    outcomes = forecast_splitting(predict, MIXED)
    for outcome, alone in zip(outcomes, MIXED):
        assert_same(outcome, gpu.forecast([alone])[0])


# --- the queue -----------------------------------------------------------------------------------


class StandInModel:
    """Answers each batch once the test releases it; records the batches (their seeds)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Semaphore(0)
        self.started = threading.Event()
        self.fail_next = False

    def __call__(self, batch: list[SeriesInput], on_done=None) -> Sequence:
        self.batches.append([s.seed for s in batch])
        self.started.set()
        self.release.acquire(timeout=10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a bug outside the model call")
        return [None if s.cancel.is_set() else stub_forecast(s) for s in batch]


def stub_forecast(s: SeriesInput) -> Forecast:
    return Forecast(s.future_timestamps, np.zeros((s.pred_len, 6)), np.zeros((s.sample_count, s.pred_len, 6)), s.seed)


def scheduler_for(model: StandInModel, **limits) -> tuple[BatchScheduler, ServiceMetrics]:
    from concurrent.futures import ThreadPoolExecutor

    metrics = ServiceMetrics().for_model("test")
    options = {"max_rows": 4, "max_tokens": 10_000, "context": 512, "wait_s": 0.0, "max_queue": 4, "timeout_s": 10.0}
    options.update(limits)
    return BatchScheduler(model, ThreadPoolExecutor(1), metrics, **options), metrics


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


def test_batches_take_series_in_order_within_the_row_budget():
    model = StandInModel()
    scheduler, metrics = scheduler_for(model, max_queue=8)

    async def scenario():
        first = asyncio.ensure_future(scheduler.submit([series(seed=0)]))
        await asyncio.to_thread(model.started.wait, 5)  # the model is busy with seed 0 ...
        rest = [
            asyncio.ensure_future(scheduler.submit([series(seed=i, sample_count=n)]))
            for i, n in [(1, 2), (2, 2), (3, 3), (4, 1)]
        ]
        await until(lambda: scheduler.depth == 4)  # ... while 4 series queue up
        for _ in range(3):
            model.release.release()
        return await asyncio.gather(first, *rest)

    results = asyncio.run(scenario())
    assert [f.seed for (f,) in results] == [0, 1, 2, 3, 4]
    # 2 + 2 rows fill the budget of 4; then 3 + 1.
    assert model.batches == [[0], [1, 2], [3, 4]]
    assert metrics.batches.labels("full")._value.get() == 2
    assert metrics.queue_depth._value.get() == 0


def test_long_forecasts_form_smaller_batches():
    model = StandInModel()
    # 20 input rows + 6 forecast = 26 tokens per path; a 600-row series sees only context = 100 rows.
    scheduler, metrics = scheduler_for(model, max_rows=8, max_tokens=60, context=100, max_queue=8)

    async def scenario():
        first = asyncio.ensure_future(scheduler.submit([series(seed=0)]))
        await asyncio.to_thread(model.started.wait, 5)
        rest = [
            asyncio.ensure_future(scheduler.submit([s]))
            for s in (series(seed=1), series(seed=2), series(seed=3, sample_count=2), series(200, 6, seed=4))
        ]
        await until(lambda: scheduler.depth == 4)
        for _ in range(4):
            model.release.release()
        await asyncio.gather(first, *rest)

    asyncio.run(scenario())
    # 26 + 26 tokens fit in 60; 52 for two paths; a series over the budget (106) goes alone.
    assert model.batches == [[0], [1, 2], [3], [4]]
    assert metrics.batch_tokens._sum.get() == 26 * 3 + 52 + 106


def test_the_first_series_waits_for_company():
    model = StandInModel()
    scheduler, _ = scheduler_for(model, wait_s=0.3, max_rows=8, max_queue=8)

    async def scenario():
        first = asyncio.ensure_future(scheduler.submit([series(seed=1)]))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(scheduler.submit([series(seed=2), series(seed=3)]))
        model.release.release()
        return await asyncio.gather(first, second)

    started = time.monotonic()
    asyncio.run(scenario())
    assert model.batches == [[1, 2, 3]]
    assert time.monotonic() - started >= 0.3


def test_once_the_model_is_free_the_batch_waits_for_the_clients_just_answered():
    model = StandInModel()
    scheduler, _ = scheduler_for(model, wait_s=0.3, max_rows=8, max_queue=8)

    async def scenario():
        first = asyncio.ensure_future(scheduler.submit([series(seed=1)]))
        await asyncio.to_thread(model.started.wait, 5)
        queued = asyncio.ensure_future(scheduler.submit([series(seed=2)]))  # waits longer than 0.3 s ...
        await asyncio.sleep(0.4)
        model.release.release()
        await first
        # ... but the client just answered comes back within 0.3 s and joins it.
        again = asyncio.ensure_future(scheduler.submit([series(seed=3)]))
        model.release.release()
        return await asyncio.gather(queued, again)

    asyncio.run(scenario())
    assert model.batches == [[1], [2, 3]]


def test_a_full_queue_refuses_at_once_with_retry_after_and_admits_all_or_nothing():
    model = StandInModel()
    scheduler, _ = scheduler_for(model, max_rows=1, max_queue=3)

    async def scenario():
        running = asyncio.ensure_future(scheduler.submit([series(seed=0)]))
        await asyncio.to_thread(model.started.wait, 5)
        queued = asyncio.ensure_future(scheduler.submit([series(seed=1), series(seed=2)]))
        await until(lambda: scheduler.depth == 2)
        with pytest.raises(QueueFull) as too_many:
            await scheduler.submit([series(seed=3), series(seed=4)])  # 2 more do not fit: none is queued
        assert scheduler.depth == 2
        one_more = asyncio.ensure_future(scheduler.submit([series(seed=5)]))  # 1 does
        await until(lambda: scheduler.depth == 3)
        with pytest.raises(QueueFull) as full:
            await scheduler.submit([series(seed=6)])
        for _ in range(4):
            model.release.release()
        await asyncio.gather(running, queued, one_more)
        return too_many.value, full.value

    too_many, full = asyncio.run(scenario())
    assert full.status_code == 503 and full.error_type == "queue_full"
    assert 1 <= int(full.headers["Retry-After"]) <= 60
    assert full.details["queue_depth"] == 3 and "KRONOS_MAX_QUEUE" in full.message
    assert too_many.details["series"] == 2
    assert model.batches == [[0], [1], [2], [5]]


def test_timeouts_and_disconnects_free_their_places():
    model = StandInModel()
    scheduler, metrics = scheduler_for(model, max_rows=1, timeout_s=0.3)

    async def scenario():
        running = asyncio.ensure_future(scheduler.submit([series(seed=0)]))
        await asyncio.to_thread(model.started.wait, 5)
        timed_out = asyncio.ensure_future(scheduler.submit([series(seed=1)]))
        gone = asyncio.ensure_future(scheduler.submit([series(seed=2)]))
        await until(lambda: scheduler.depth == 2)
        gone.cancel()  # what the route does when the client disconnects
        await until(lambda: scheduler.depth == 1)
        with pytest.raises(ForecastTimeout):
            await timed_out
        assert scheduler.depth == 0
        with pytest.raises(ForecastTimeout):
            await running  # it timed out while decoding: its cancel event is set
        running_series = scheduler._running[0].series
        assert running_series.cancel.is_set()
        model.release.release()
        model.started.clear()
        later = asyncio.ensure_future(scheduler.submit([series(seed=3)]))
        await asyncio.to_thread(model.started.wait, 5)
        model.release.release()
        return await later

    (forecast,) = asyncio.run(scenario())
    assert forecast.seed == 3
    assert model.batches == [[0], [3]]
    assert metrics.cancelled_series.labels("disconnect")._value.get() == 1
    assert metrics.cancelled_series.labels("timeout")._value.get() == 2


def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs():
    model = StandInModel()
    scheduler, _ = scheduler_for(model, wait_s=0.05)

    async def scenario():
        model.fail_next = True
        model.release.release()
        with pytest.raises(ServiceError) as failed:
            await scheduler.submit([series(seed=1), series(seed=2)])
        model.release.release()
        return failed.value, await scheduler.submit([series(seed=3)])

    failed, (forecast,) = asyncio.run(scenario())
    assert failed.status_code == 500 and failed.message.startswith("batch item 0: ")
    assert forecast.seed == 3


def test_closing_answers_everyone_waiting():
    model = StandInModel()
    scheduler, _ = scheduler_for(model, max_rows=1)

    async def scenario():
        running = asyncio.ensure_future(scheduler.submit([series(seed=0)]))
        await asyncio.to_thread(model.started.wait, 5)
        queued = asyncio.ensure_future(scheduler.submit([series(seed=1)]))
        await until(lambda: scheduler.depth == 1)
        await scheduler.close()
        model.release.release()
        results = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(ModelNotReady):
            await scheduler.submit([series(seed=2)])
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, ModelNotReady) for r in results)


def test_batching_settings():
    settings = load_settings(env_file=None)
    assert (settings.batch_rows("cpu"), settings.batch_rows("cuda:0")) == (32, 256)  # auto by device
    assert (settings.batch_tokens("cpu"), settings.batch_tokens("cuda:0")) == (4096, 131072)
    assert load_settings(env_file=None, max_batch_size=1).batch_rows("cuda:0") == 1
    with pytest.raises(SettingsError, match="KRONOS_MAX_QUEUE"):
        load_settings(env_file=None, max_queue=10)  # a 64-item batch request could never be queued


# --- step level: series join and leave the running batch at every decode step ---------------------


def step_scheduler(engine, **limits) -> tuple[BatchScheduler, ServiceMetrics]:
    from concurrent.futures import ThreadPoolExecutor

    metrics = ServiceMetrics().for_model("test")
    options = {"max_rows": 8, "max_tokens": 10_000, "context": 512, "wait_s": 0.0, "max_queue": 16, "timeout_s": 60.0}
    options.update(limits)
    return BatchScheduler(None, ThreadPoolExecutor(1), metrics, step_model=lambda: engine, **options), metrics


def new_engine(predictor, slots: int = 8):
    from model.decoding.engine import DecodeEngine

    return DecodeEngine(predictor, slots=slots, chunk=32)


def test_step_level_a_short_request_joins_a_running_long_one_and_is_answered_before_it_ends(predictor):
    engine = new_engine(predictor)
    scheduler, metrics = step_scheduler(engine)
    long, short = series(30, 300, seed=22), series(70, 3, seed=21)

    async def scenario():
        slow = asyncio.ensure_future(scheduler.submit([long]))
        await until(lambda: metrics.decode_steps._value.get() >= 5, timeout=120)  # the long one decodes ...
        (answer,) = await scheduler.submit([short])  # ... when the short one arrives
        still_decoding = not slow.done()
        (long_answer,) = await slow
        return answer, still_decoding, long_answer

    answer, still_decoding, long_answer = asyncio.run(scenario())
    assert still_decoding  # it joined the running batch and left it long before the end
    assert metrics.batches.labels("joined")._value.get() == 1
    assert np.array_equal(answer.samples, predictor.forecast([short])[0].samples)
    assert np.array_equal(long_answer.samples, predictor.forecast([long])[0].samples)


def test_step_level_budgets_hold_at_every_step_and_nobody_overtakes(predictor):
    engine = new_engine(predictor, slots=4)
    # tokens per series: sample_count × (rows + pred_len)
    scheduler, metrics = step_scheduler(engine, max_rows=4, max_tokens=200)
    admitted: list[int] = []
    held: list[tuple[int, int]] = []
    real_admit, real_step = engine.admit, engine.step

    def admit(key, s):
        admitted.append(s.seed)
        real_admit(key, s)

    def step():
        with scheduler._lock:
            held.append((sum(j.rows for j in scheduler._running), sum(j.tokens for j in scheduler._running)))
        return real_step()

    engine.admit, engine.step = admit, step
    first = series(20, 30, 2, seed=0)  # 2 rows, 100 tokens
    later = [
        series(20, 10, 1, seed=1),  # 30 tokens: joins
        series(40, 20, 2, seed=2),  # 120 tokens: waits until the first is done
        series(20, 5, 1, seed=3),  # 25 tokens would fit beside the first, but must not overtake seed 2
    ]

    async def scenario():
        running = asyncio.ensure_future(scheduler.submit([first]))
        await until(lambda: metrics.decode_steps._value.get() >= 3, timeout=120)
        rest = [asyncio.ensure_future(scheduler.submit([s])) for s in later]
        return await asyncio.gather(running, *rest)

    results = asyncio.run(scenario())
    assert admitted == [0, 1, 2, 3]
    assert held and all(rows <= 4 and tokens <= 200 for rows, tokens in held), max(held)
    assert max(held) > (2, 100)  # series did join the running batch
    for (forecast,), s in zip(results, [first, *later]):
        assert np.array_equal(forecast.samples, predictor.forecast([s])[0].samples)


def test_step_level_out_of_memory_evicts_the_newest_and_everyone_gets_their_solo_numbers(predictor):
    engine = new_engine(predictor)
    evictions: list[int] = []
    scheduler, metrics = step_scheduler(
        engine,
        wait_s=0.2,
        as_error=lambda exc: DeviceOutOfMemory("does not fit", {"device": "cuda:0"}),
        on_evict=lambda exc, n: evictions.append(n),
    )
    real_step = engine.step

    def step():  # out of memory above 2 series, or with a series of 5 sample paths
        live = [e.series for e in engine.series.values()]
        if len(live) > 2 or any(s.sample_count == 5 for s in live):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_step()

    engine.step = step
    batch = [series(20 + 5 * i, 4 + i, 1 + i % 2, seed=40 + i) for i in range(4)]

    async def scenario():
        together = await scheduler.submit(batch)
        with pytest.raises(DeviceOutOfMemory):
            await scheduler.submit([series(20, 4, 5, seed=50)])
        return together, await scheduler.submit([series(20, 4, 1, seed=51)])

    together, (after,) = asyncio.run(scenario())
    assert evictions == [4, 3]  # 4 fail, the newest waits; 3 fail, the next newest waits; 2 fit
    for forecast, s in zip(together, batch):
        assert np.array_equal(forecast.samples, predictor.forecast([s])[0].samples)
    assert after.seed == 51 and engine.idle


def test_step_level_a_timed_out_series_leaves_the_batch_at_the_next_step(predictor):
    engine = new_engine(predictor)
    # The long series takes over 1 s alone on an idle 2-core machine (8 paths, 500 steps): a timeout of
    # 0.25 s ends it mid-batch however fast the machine (1 s was flaky: the work took 1.1 s here).
    scheduler, metrics = step_scheduler(engine, timeout_s=0.25)

    async def scenario():
        with pytest.raises(ForecastTimeout):
            await scheduler.submit([series(30, 500, 8, seed=60)])
        await until(lambda: engine.idle, timeout=60)
        return await scheduler.submit([series(20, 3, seed=61)])

    (forecast,) = asyncio.run(scenario())
    assert forecast.seed == 61
    assert metrics.cancelled_series.labels("timeout")._value.get() == 1
