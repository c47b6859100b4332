"""``AsyncClient``: the same methods, awaited, with the same answers as ``Client``."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
from client_support import API_KEY, jobs_available
from kronos_client import AsyncClient, AsyncJob, ValidationError

JOB_WAIT_S = 180  # every wait on a job is bounded: a stuck job fails the test, never hangs CI


def _run(coroutine):
    return asyncio.run(coroutine)


def test_every_plain_method(main_server, kronos, goog, universe):
    async def calls():
        async with AsyncClient(main_server.url, api_key=API_KEY) as client:
            return await asyncio.gather(
                client.health(),
                client.ready(),
                client.models(),
                client.forecast(goog, 6, sample_count=4, quantiles=(0.1, 0.9), seed=13),
                client.backtest(goog, windows=3, pred_len=4, sample_count=4, seed=2),
                client.forecast_many(universe, 3, seed=6),
            )

    health, ready, models, forecast, backtest, many = _run(calls())
    assert health["status"] == "ok" and ready["status"] == "ready" and models == kronos.models()
    same = kronos.forecast(goog, 6, sample_count=4, quantiles=(0.1, 0.9), seed=13)
    pd.testing.assert_frame_equal(forecast.frame, same.frame)
    pd.testing.assert_frame_equal(forecast.bands, same.bands)
    pd.testing.assert_frame_equal(
        backtest.baselines, kronos.backtest(goog, windows=3, pred_len=4, sample_count=4, seed=2).baselines
    )
    pd.testing.assert_frame_equal(many, kronos.forecast_many(universe, 3, seed=6))


def test_errors_are_the_same_types(main_server, goog):
    async def bad():
        async with AsyncClient(main_server.url, api_key=API_KEY) as client:
            await client.forecast(goog, 100_000)

    with pytest.raises(ValidationError) as caught:
        _run(bad())
    assert caught.value.fields == ["pred_len"]


def test_jobs_awaited_and_async_with(main_server, goog):
    available, reason = jobs_available(main_server)
    if not available:
        pytest.skip(reason)

    async def jobs():
        async with AsyncClient(main_server.url, api_key=API_KEY) as client:
            job = await client.submit_job({"a": goog, "b": goog.iloc[:80]}, pred_len=3, seed=5)
            assert isinstance(job, AsyncJob)
            final = await job.wait(progress=False, timeout=JOB_WAIT_S)
            frame = await job.results()
            with pytest.raises(RuntimeError):
                async with client.submit_job({f"s{i}": goog for i in range(10)}, pred_len=200, sample_count=8) as slow:
                    raise RuntimeError("cell failed")
            cancelled = await slow.status()
            await job.delete()
            return final, frame, cancelled

    final, frame, cancelled = _run(jobs())
    assert final["status"] == "succeeded" and sorted(set(frame["id"])) == ["a", "b"]
    assert cancelled["status"] in ("cancelling", "cancelled")
