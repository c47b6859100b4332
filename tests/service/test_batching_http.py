"""Batching over real HTTP against real servers: batched answers equal solo answers, a full queue
gives 503 + Retry-After while health and metrics keep answering, a client that hangs up frees its
place (queued or decoding), and a failing or out-of-memory batch leaves the server serving."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import GUIDE_BATCH_ONE, GUIDE_SINGLE, assert_error
from prometheus_client.parser import text_string_to_metric_families

COLUMNS = ["open", "high", "low", "close", "volume", "amount"]


@pytest.fixture(scope="module")
def servers(start_servers):
    open_door = {"KRONOS_RATE_LIMIT_PER_MINUTE": "0"}
    return start_servers(
        # A long wait, so requests sent together surely share a batch.
        batching={**open_door, "KRONOS_BATCH_WAIT_MS": "400"},
        # One series at a time and room for two more.
        small_queue={**open_door, "KRONOS_MAX_QUEUE": "2", "KRONOS_MAX_BATCH_ITEMS": "2", "KRONOS_MAX_BATCH_SIZE": "1"},
        faulty={**open_door, ".main": str(Path(__file__).with_name("faulty_server.py")), "KRONOS_BATCH_WAIT_MS": "200"},
        faulty_request_level={
            **open_door,
            ".main": str(Path(__file__).with_name("faulty_server.py")),
            "KRONOS_BATCH_WAIT_MS": "200",
            "KRONOS_BATCHING": "request",
        },
    )


# --- helpers -------------------------------------------------------------------------------------


def candles(rows: int, seed: int, volume: bool = False) -> list[list[float]]:
    close = 100 + np.cumsum(np.random.default_rng(seed).normal(size=rows))
    return [
        [round(c, 4), round(c + 1, 4), round(c - 1, 4), round(c + 0.3, 4)] + ([1000.0 + i] if volume else [])
        for i, c in enumerate(close)
    ]


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/v1/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # One model here: its metrics' model label is left out of the match.
            if sample.name == name and {k: v for k, v in sample.labels.items() if k != "model"} == labels:
                return sample.value
    return 0.0


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held"
        time.sleep(0.05)


class RawRequest:
    """A POST over a bare socket, so the test decides exactly when the client hangs up."""

    def __init__(self, url: str, path: str, body: dict) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        self.sock.sendall(head.encode() + payload)

    def status(self) -> int:
        """Read the whole response; its status code."""
        received = b""
        while chunk := self.sock.recv(65536):
            received += chunk
        self.sock.close()
        return int(received.split(b" ", 2)[1])

    def hang_up(self) -> None:
        self.sock.close()


def values(body) -> np.ndarray:
    """Every forecast number of a response (mean rows and quantile bands), in order."""
    if isinstance(body, list):
        return np.concatenate([values(item) for item in body])
    if "results" in body:
        return np.concatenate([values(result) for result in body["results"]])
    if "prediction" in body:
        return np.array([row[c] for row in body["prediction"] for c in COLUMNS if row[c] is not None])
    rows = body["forecast"] + [row for band in body["quantiles"] or [] for row in band["forecast"]]
    return np.array([row[c] for row in rows for c in COLUMNS if row[c] is not None])  # null: not given


def post_all(url: str, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Send every request at once, each on its own connection."""

    def post(request: tuple[str, dict]) -> httpx.Response:
        return httpx.post(url + request[0], json=request[1], timeout=60)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(post, requests))


# --- batched = solo ------------------------------------------------------------------------------

STAMPS = pd.date_range("2024-03-01T09:30:00Z", periods=160, freq="5min")
MIXED = [
    ("/v1/predict/single", {"data": candles(30, 1), "pred_len": 12, "seed": 1}),
    (
        "/v1/predict/single",
        {"data": candles(80, 2, volume=True), "pred_len": 5, "sample_count": 3, "seed": 2, "T": 0.7, "top_k": 20},
    ),
    (
        "/v1/predict/single",
        {"data": candles(1, 3), "pred_len": 25, "sample_count": 2, "seed": 3, "top_p": 0.5, "quantiles": [0.1, 0.9]},
    ),
    (
        "/v1/predict/single",
        {"data": candles(150, 4), "timestamps": [t.isoformat() for t in STAMPS[:150]], "pred_len": 8, "seed": 4},
    ),
    (
        "/v1/predict/batch",
        {
            "batch": [
                {"data": candles(40, 5), "pred_len": 6, "seed": 5},
                {"data": candles(10, 6), "pred_len": 15, "sample_count": 4, "seed": 6, "freq": "h"},
            ]
        },
    ),
    (
        "/v1/predict/single",
        {
            "candles": [dict(zip(COLUMNS, row)) for row in candles(20, 7, volume=True)],
            "timestamps": [t.isoformat() for t in STAMPS[:20]],
            "prediction_timestamps": [t.isoformat() for t in STAMPS[20:30]],
            "overrides": {"seed": 7, "sample_count": 2, "temperature": 1.3},
        },
    ),
]


def test_batched_answers_equal_solo_answers(servers):
    url = servers["batching"].url
    batches_before, series_before = metric(url, "kronos_batch_size_count"), metric(url, "kronos_batch_size_sum")
    together = post_all(url, MIXED)
    assert [r.status_code for r in together] == [200] * len(MIXED), [r.text for r in together]
    ready = httpx.get(url + "/v1/readyz", timeout=10).json()["batching"]
    assert ready["mode"] == "step" and ready["kv_cache_bytes"] == metric(url, "kronos_kv_cache_bytes") > 0
    batches = metric(url, "kronos_batch_size_count") - batches_before
    series = metric(url, "kronos_batch_size_sum") - series_before
    assert series == 7 and batches < series, f"{series} series in {batches} batches: nothing was batched"
    with httpx.Client(base_url=url, timeout=60) as client:
        for (path, body), batched in zip(MIXED, together):
            alone = client.post(path, json=body)
            assert alone.status_code == 200
            np.testing.assert_allclose(values(batched.json()), values(alone.json()), rtol=1e-5, atol=1e-6)


# --- backpressure and disconnects ----------------------------------------------------------------

# A forecast that decodes for a long time (500 rows slide the 512-token window at almost every
# step, for 32 sample paths): minutes, unless its client hangs up.
BLOCKER = {"data": candles(500, 9), "pred_len": 500, "sample_count": 32, "seed": 9}


def test_a_full_queue_refuses_while_health_answers_and_hang_ups_free_places(servers):
    url = servers["small_queue"].url
    blocker = RawRequest(url, "/v1/predict/single", BLOCKER)
    queued: list[RawRequest] = []
    try:
        wait_for(lambda: metric(url, "kronos_batch_rows_sum") >= 32, what="the long forecast decoding")
        queued = [RawRequest(url, "/v1/predict/single", GUIDE_SINGLE) for _ in range(2)]
        wait_for(lambda: metric(url, "kronos_queue_depth") == 2, what="two requests queued")
        with httpx.Client(base_url=url, timeout=30) as client:
            full = client.post("/v1/predict/single", json=GUIDE_SINGLE)
            error = assert_error(full, 503, "queue_full")
            assert 1 <= int(full.headers["Retry-After"]) <= 60
            assert "KRONOS_MAX_QUEUE" in error["message"] and error["details"][0]["queue_depth"] == 2
            assert_error(client.post("/v1/predict/batch", json=GUIDE_BATCH_ONE), 503, "queue_full")
            # Health, readiness and metrics answer promptly while the queue is full.
            for path in ("/v1/healthz", "/v1/readyz", "/v1/metrics"):
                started = time.perf_counter()
                assert client.get(path).status_code == 200
                assert time.perf_counter() - started < 1.0, f"{path} was slow while the queue was full"
            assert client.get("/v1/readyz").json()["batching"]["queue_depth"] == 2
            assert metric(url, "kronos_rejections_total", reason="queue_full") == 2

        # The queued clients hang up: their places are free at once.
        for request in queued:
            request.hang_up()
        wait_for(lambda: metric(url, "kronos_queue_depth") == 0, timeout=5, what="the queue emptied")
        assert metric(url, "kronos_cancelled_series_total", reason="disconnect") == 2
        waiting = RawRequest(url, "/v1/predict/single", GUIDE_SINGLE)
        wait_for(lambda: metric(url, "kronos_queue_depth") == 1, what="a new request queued")

        # The decoding client hangs up: its rows leave the batch at the next step, and the request
        # behind it is answered at once instead of after the long forecast.
        blocker.hang_up()
        started = time.perf_counter()
        assert waiting.status() == 200
        assert time.perf_counter() - started < 8  # the long forecast alone: 30 s and more
        assert metric(url, "kronos_cancelled_series_total", reason="disconnect") == 3
        gone = {"method": "POST", "route": "/v1/predict/single", "status": "499"}  # logged as nginx does
        wait_for(lambda: metric(url, "kronos_http_requests_total", **gone) == 3, timeout=5, what="three 499s")
    finally:
        for request in [blocker, *queued]:
            request.hang_up()


# --- failures stay with their batch --------------------------------------------------------------


@pytest.mark.parametrize("faulty", ["faulty", "faulty_request_level"])
def test_an_exception_in_a_batch_fails_only_that_batch(servers, faulty):
    url = servers[faulty].url
    with httpx.Client(base_url=url, timeout=60) as client:
        healthy = {"data": candles(20, 11), "pred_len": 5, "seed": 5}
        failing = {"data": candles(20, 12), "pred_len": 5, "seed": 13}  # the model raises for seed 13
        response = client.post("/v1/predict/batch", json={"batch": [healthy, failing]})
        error = assert_error(response, 500, "internal_error")
        assert "Traceback" not in response.text and error["message"].startswith("batch item ")
        # The next request is served, and the instance is still ready.
        assert client.post("/v1/predict/single", json=healthy).status_code == 200
        assert client.get("/v1/readyz").status_code == 200
    assert servers[faulty].stderr().count("injected model failure") >= 1


# Step level: 4 series fail, the newest is evicted, 3 fail, the next newest is evicted, 2 fit (the
# evicted ones rejoin as the others finish). Request level: 4 fail, then 2 + 2 fit.
@pytest.mark.parametrize("faulty,retries", [("faulty", 2), ("faulty_request_level", 1)])
def test_an_out_of_memory_batch_is_split_and_served(servers, faulty, retries):
    url = servers[faulty].url
    items = [{"data": candles(15 + 5 * i, 20 + i), "pred_len": 4 + i, "seed": 20 + i} for i in range(4)]
    with httpx.Client(base_url=url, timeout=60) as client:
        splits = metric(url, "kronos_batch_splits_total")
        together = client.post("/v1/predict/batch", json={"batch": items})  # over 2 series: out of memory
        assert together.status_code == 200, together.text
        assert metric(url, "kronos_batch_splits_total") == splits + retries
        for item, result in zip(items, together.json()["results"]):
            alone = client.post("/v1/predict/single", json=item)
            np.testing.assert_allclose(values(result), values(alone.json()), rtol=1e-5, atol=1e-6)
        # A series that does not fit even alone fails alone; the instance stays ready.
        too_big = client.post("/v1/predict/single", json={**items[0], "sample_count": 7})
        assert_error(too_big, 503, "out_of_memory")
        assert "X-Kronos-Retry-On" not in too_big.headers  # only a GPU instance sends callers to the CPU one
        assert client.get("/v1/readyz").status_code == 200
        assert client.post("/v1/predict/single", json=items[0]).status_code == 200
