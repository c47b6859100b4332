"""Backpressure for real: a server with a queue of one series, several forecasts at once. The client waits
the Retry-After the server sends (503 ``queue_full``) and every forecast succeeds; over the rate limit (429)
a wait past the retry budget is not waited for."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from kronos_client import AsyncClient, Client, Overloaded, RateLimited

CONCURRENT = 6


def _queue_full_rejections(server) -> float:
    text = httpx.get(server.url + "/v1/metrics", timeout=10).text
    found = re.search(r'^kronos_rejections_total\{reason="queue_full"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _retries(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kronos_client" and r.message.startswith("retrying")]


def test_overloaded_is_retried_after_the_servers_retry_after_and_succeeds(tight_server, goog, caplog):
    caplog.set_level(logging.INFO, logger="kronos_client")
    before = _queue_full_rejections(tight_server)
    with Client(tight_server.url, api_key="load", retries=12, max_retry_time=60) as kronos:
        kronos.models()

        def one(i: int) -> tuple[int, float]:
            started = time.monotonic()
            return kronos.forecast(goog, 30, sample_count=4, seed=i).seed, time.monotonic() - started

        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENT) as pool:
            done = list(pool.map(one, range(CONCURRENT)))
        elapsed = time.monotonic() - started
    assert [seed for seed, _ in done] == list(range(CONCURRENT))  # every one succeeded
    rejected = _queue_full_rejections(tight_server) - before
    retries = _retries(caplog)
    assert rejected >= 1 and len(retries) == rejected  # each 503 the server counted was retried once
    assert all(r.status == 503 and r.error_type == "queue_full" for r in retries)
    assert all(r.retry_after >= 1 for r in retries)  # the server's Retry-After (1 s at least), never sooner
    assert elapsed < 60


def test_without_retries_overloaded_carries_the_retry_after(tight_server, goog):
    async def burst() -> list:
        async with AsyncClient(tight_server.url, api_key="load", retries=0) as kronos:
            await kronos.models()
            tasks = [kronos.forecast(goog, 30, sample_count=4, seed=i) for i in range(CONCURRENT)]
            return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(burst())
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    assert refused, outcomes
    assert all(o.type == "queue_full" and o.status == 503 and o.retry_after >= 1 for o in refused)
    assert "KRONOS_MAX_QUEUE" in str(refused[0])  # the server's own message
    assert not [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, Overloaded)]


def test_rate_limited_past_the_retry_budget_is_raised_at_once(tight_server):
    with Client(tight_server.url, api_key="limited", retries=0) as kronos:
        for _ in range(70):
            try:
                kronos.models()
            except RateLimited as exc:
                limited = exc
                break
        else:
            pytest.fail("no 429 after 70 requests at 60 a minute")
    assert limited.status == 429 and limited.type == "rate_limited" and limited.retry_after >= 1
    with Client(tight_server.url, api_key="limited", retries=5, max_retry_time=0.5) as kronos:
        started = time.monotonic()
        with pytest.raises(RateLimited):
            kronos.models()  # Retry-After is seconds away, past the 0.5 s budget: not waited for
        assert time.monotonic() - started < 0.5
