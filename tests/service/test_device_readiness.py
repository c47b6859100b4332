"""KRONOS_DEVICE=cuda:0 on a machine without one: refuse to become ready by default, or fall back
to cpu when told; the .env file is read under the environment."""

from __future__ import annotations

import time

import httpx
import pytest
import torch
from conftest import GUIDE_SINGLE, assert_error

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(scope="module")
def cuda_servers(start_servers):
    return start_servers(
        ready=False,
        refuse={"KRONOS_DEVICE": "cuda:0"},
        fallback={
            # Device from .env; the environment's instance name beats the .env one.
            ".env": "KRONOS_DEVICE=cuda:0\nKRONOS_INSTANCE_NAME=from-dotenv\nKRONOS_DEVICE_FALLBACK=refuse\n",
            "KRONOS_DEVICE_FALLBACK": "cpu",
            "KRONOS_INSTANCE_NAME": "from-env",
        },
    )


def _readyz_settled(url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(url + "/v1/readyz", timeout=5)
        if response.json()["status"] != "loading" or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_missing_device_refuses_readiness_with_a_reason(cuda_servers):
    url = cuda_servers["refuse"].url
    response = _readyz_settled(url)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failed"
    assert "cuda:0" in body["reason"] and "CUDA is not available" in body["reason"]
    assert body["device_requested"] == "cuda:0" and body["device"] is None
    # Alive, but forecasts are refused with the reason.
    assert httpx.get(url + "/v1/healthz").status_code == 200
    refused = httpx.post(url + "/v1/predict/single", json=GUIDE_SINGLE)
    error = assert_error(refused, 503, "model_not_ready")
    assert "CUDA" in error["message"]
    assert refused.headers["X-Kronos-Device"] == "none"
    detailed = httpx.get(url + "/v1/healthz/detailed").json()
    assert detailed["status"] == "degraded"


def test_fallback_serves_on_cpu_and_says_so(cuda_servers):
    url = cuda_servers["fallback"].url
    response = _readyz_settled(url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["device"] == "cpu" and body["device_requested"] == "cuda:0" and body["device_fallback"] is True
    assert body["instance"] == "from-env"
    forecast = httpx.post(url + "/v1/predict/single", json=GUIDE_SINGLE, timeout=60)
    assert forecast.status_code == 200
    assert forecast.json()["device"] == "cpu"
    assert forecast.headers["X-Kronos-Device"] == "cpu"
    assert "falling back to cpu" in cuda_servers["fallback"].stderr()
