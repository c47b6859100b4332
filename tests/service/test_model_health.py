"""A model thread gone bad turns the instance unready, with the reason, and back once it works:
the rules (ModelHealth, on a fake clock) and the real server whose model fails or hangs on cue
(faulty_server.py): readyz 503 ``broken`` / ``stalled``, forecasts 503 instead of 500s (so the
balancer sends them to the other pool), the metrics, and recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import GUIDE_SINGLE, assert_error

from services.kronos_fastapi.model_health import BROKEN, PROBE_EVERY_S, STALLED, ModelHealth

FAULTY = str(Path(__file__).with_name("faulty_server.py"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_break_it_and_a_success_heals_it():
    clock = Clock()
    health = ModelHealth(stall_s=60, failure_limit=3, clock=clock)
    for _ in range(2):
        health.started()
        health.failed(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert health.problem() is None  # two in a row: not yet
    health.started()
    health.succeeded()
    for _ in range(2):
        health.started()
        health.failed(RuntimeError("again"))
    health.started()
    health.ended()  # an input error or an out-of-memory split: no verdict either way
    assert health.problem() is None and health.failures == 2
    health.started()
    health.failed(RuntimeError("CUDA error: an illegal memory access was encountered"))
    state, reason = health.problem()
    assert state == BROKEN
    assert "last 3 model calls failed" in reason and "RuntimeError: CUDA error" in reason
    assert "KRONOS_MODEL_FAILURE_LIMIT=3" in reason
    assert not health.probe_due()  # a test forecast only PROBE_EVERY_S after the last failure
    clock.now += PROBE_EVERY_S
    assert health.probe_due()
    health.started()
    assert not health.probe_due()  # one at a time
    health.succeeded()
    assert health.problem() is None and not health.probe_due()


def test_a_call_running_too_long_is_a_stall_until_it_returns():
    clock = Clock()
    health = ModelHealth(stall_s=60, failure_limit=3, clock=clock)
    health.started()
    clock.now += 59
    assert health.problem() is None
    clock.now += 2
    state, reason = health.problem()
    assert state == STALLED and "running for 61 s" in reason and "KRONOS_MODEL_STALL_S=60" in reason
    health.succeeded()
    assert health.problem() is None
    assert not health.probe_due()  # a stall heals by itself; no test forecast behind a wedged call


def test_zero_turns_each_check_off():
    clock = Clock()
    health = ModelHealth(stall_s=0, failure_limit=0, clock=clock)
    for _ in range(10):
        health.started()
        health.failed(RuntimeError("x"))
    health.started()
    clock.now += 10_000
    assert health.problem() is None


@pytest.fixture(scope="module")
def servers(start_servers, tmp_path_factory):
    flag = tmp_path_factory.mktemp("broken") / "device-gone"
    open_door = {"KRONOS_RATE_LIMIT_PER_MINUTE": "0", ".main": FAULTY}
    found = start_servers(
        breaks={**open_door, "FAULTY_BROKEN_FLAG": str(flag)},
        breaks_request_level={**open_door, "FAULTY_BROKEN_FLAG": str(flag), "KRONOS_BATCHING": "request"},
        hangs={**open_door, "KRONOS_MODEL_STALL_S": "1"},
    )
    return found, flag


def _ready(url: str) -> httpx.Response:
    return httpx.get(url + "/v1/readyz", timeout=10)


def test_a_broken_model_thread_turns_unready_with_the_reason_and_recovers(servers):
    found, flag = servers
    urls = [found["breaks"].url, found["breaks_request_level"].url]
    flag.touch()  # the device goes bad under both (step-level and request-level batching)
    try:
        for url in urls:
            for _ in range(3):  # KRONOS_MODEL_FAILURE_LIMIT, default 3
                assert_error(httpx.post(url + "/v1/predict/single", json=GUIDE_SINGLE, timeout=30), 500)
            ready = _ready(url)
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["status"] == "broken"
            assert "the last 3 model calls failed" in body["reason"]
            assert "injected device failure" in body["reason"]
            assert body["models"][0]["state"] == "broken"
            # Forecasts now get 503 at once (no model call): the balancer's cue to use the other pool.
            started = time.monotonic()
            refused = assert_error(httpx.post(url + "/v1/predict/single", json=GUIDE_SINGLE, timeout=30), 503)
            assert refused["type"] == "model_not_ready" and "broken" in refused["message"]
            assert time.monotonic() - started < 2
            metrics = httpx.get(url + "/v1/metrics", timeout=10).text
            assert 'kronos_model_ready{model="' in metrics and "} 0.0" in metrics.split("kronos_model_ready{")[1]
            assert 'state="broken"' in metrics
        time.sleep(PROBE_EVERY_S + 0.5)
        for url in urls:  # the test forecast still fails while the device is bad
            assert _ready(url).status_code == 503
    finally:
        flag.unlink()
    for url in urls:  # the device is back: the next test forecast works and the instance is ready
        deadline = time.monotonic() + 3 * PROBE_EVERY_S
        while _ready(url).status_code != 200:
            assert time.monotonic() < deadline, _ready(url).text
            time.sleep(0.2)
        assert httpx.post(url + "/v1/predict/single", json=GUIDE_SINGLE, timeout=30).status_code == 200


def test_a_wedged_model_thread_is_unready_while_the_call_hangs(servers):
    found, _ = servers
    url = found["hangs"].url
    hung = {"data": [[100, 101, 99, 100.5]] * 8, "pred_len": 2, "seed": 34}  # each step sleeps 2 s
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("r", httpx.post(url + "/v1/predict/single", json=hung, timeout=60))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while (ready := _ready(url)).status_code == 200:
            assert time.monotonic() < deadline, "readyz never noticed the hung call"
            time.sleep(0.1)
        assert ready.status_code == 503 and ready.json()["status"] == "stalled"
        assert "KRONOS_MODEL_STALL_S=1" in ready.json()["reason"]
    finally:
        worker.join(timeout=60)
    assert result["r"].status_code == 200  # it was slow, not broken
    assert _ready(url).status_code == 200
